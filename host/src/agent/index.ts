// The host agent wiring: what the CLI and the tests start.
// First: ssh2 must see the pooled random fill when it loads.
import '../ssh/random-pool.js';

export { outdatedAgent, startGuestAgent } from './guest-start.js';
export { HostAgent, type HostAgentOptions, type MountDriver } from './host-agent.js';
export { mountDriver } from './mounts.js';
export { type RunAgentOptions, type RunningAgent, runAgent } from './run.js';
