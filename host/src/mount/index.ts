// Public surface of mount orchestration: the manager the agent wiring drives, the requirements doctor checks, and
// the sftp-server lookup.

export { type FsEventSink, MountManager, type MountManagerOptions } from './manager.js';
export { GuestMount, lazyUnmountCommand } from './mount.js';
export { checkMountRequirements, type MountRequirement, type RequirementOptions } from './requirements.js';
export { findSftpServer, SFTP_SERVER_PATHS } from './sftp-driver.js';
