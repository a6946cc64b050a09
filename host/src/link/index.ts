// The host side of the agent link.
export { AgentLink, type AgentLinkOptions, GUEST_STOPPING, greet } from './agent-link.js';
