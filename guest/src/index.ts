// Public surface of the guest package (for tests and tools; the shipped artefact is the bundled CLI in main.ts).
export { AgentServer, type AgentServerOptions } from './agent/server.js';
export { DEFAULT_SOCKET_PATH } from './agent/socket.js';
export { FsApplier, type FsApplierOptions } from './inotify/applier.js';
export { Logger, type LogLevel } from './log.js';
export { UdpRelay, type UdpRelayOptions } from './relay/udp.js';
export { AGENT_NAME, BUILD_HASH, CAPABILITIES, VERSION } from './version.js';
