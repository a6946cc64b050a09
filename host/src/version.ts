// The host's version: what `tether --version` prints and the name the host agent gives in its hello to the guest.
export const VERSION = '0.1.0';

/** The `agent` string of the host's hello, e.g. `tether/0.1.0`. */
export const HOST_AGENT_NAME = `tether/${VERSION}`;
