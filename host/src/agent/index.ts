// The host agent wiring: what the CLI and the tests start.
// First: ssh2 must see the pooled random fill when it loads.
import '../ssh/random-pool.js';

export { HostAgent, type HostAgentOptions } from './host-agent.js';
export { runAgent } from './run.js';
