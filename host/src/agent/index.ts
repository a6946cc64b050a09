// The host agent wiring: what the CLI and the tests start.
// First: ssh2 must see the pooled random fill when it loads.
import '../ssh/random-pool.js';

export { type AgentMounts, HostAgent, type HostAgentOptions } from './host-agent.js';
export { agentMounts } from './mounts.js';
export { type RunAgentOptions, type RunningAgent, runAgent } from './run.js';
