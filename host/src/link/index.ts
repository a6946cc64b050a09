// The host side of the agent link.
export { AgentLink, type AgentLinkOptions, agentBuild, GUEST_STOPPING } from './agent-link.js';
