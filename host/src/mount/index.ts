// Public surface of mount orchestration: the manager the agent wiring drives, the requirements doctor checks, and
// the sftp-server lookup.

export { MountManager } from './manager.js';
export { checkMountRequirements, type MountRequirement, mountPointElsewhere } from './requirements.js';
export { findSftpServer } from './sftp-driver.js';
