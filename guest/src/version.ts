// The agent's identity: its version and the build hash the host compares to decide whether to upload a new agent.
// Both are baked in by scripts/build-guest.mjs (esbuild `define`); unbundled runs (tests, tsc output) report `dev`.
import { CAP_MARKER_TOUCH } from '@tether/protocol';

declare const __TETHER_GUEST_VERSION__: string | undefined;
declare const __TETHER_GUEST_BUILD_HASH__: string | undefined;

export const VERSION: string = typeof __TETHER_GUEST_VERSION__ === 'string' ? __TETHER_GUEST_VERSION__ : '0.1.0-dev';
export const BUILD_HASH: string = typeof __TETHER_GUEST_BUILD_HASH__ === 'string' ? __TETHER_GUEST_BUILD_HASH__ : 'dev';

/** The `agent` string of the guest's hello. */
export const AGENT_NAME = `tether-guest/${VERSION}`;

/** What this agent can do, announced in hello and `info`. */
export const CAPABILITIES = ['ports', 'udp', 'fs', CAP_MARKER_TOUCH];
