// The host side of the agent link.
export { AgentLink, type AgentLinkOptions, agentBuild } from './agent-link.js';
