// Public surface of mount orchestration: the manager the agent wiring drives, requirements, and the pieces the
// benchmark and doctor reuse.

export { type FsEventSink, MountManager, type MountManagerOptions } from './manager.js';
export { GuestMount, lazyUnmountCommand } from './mount.js';
export { checkMountRequirements, type MountRequirement, type RequirementOptions } from './requirements.js';
export { findSftpServer, SFTP_SERVER_PATHS } from './sftp-driver.js';
export { BASE_OPTIONS, CACHE_OPTIONS, mountPointOf, sshfsCommand, sshfsOptions } from './sshfs-options.js';
