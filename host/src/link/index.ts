// The host side of the agent link.
export { AgentLink, type AgentLinkOptions } from './agent-link.js';
export { greet } from './greet.js';
export { GUEST_STOPPING } from './guest-shutdown.js';
