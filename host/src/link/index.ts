// The host side of the agent link.
export { AgentLink, type AgentLinkOptions } from './agent-link.js';
