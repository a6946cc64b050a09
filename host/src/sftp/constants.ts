// SFTP version 3 wire constants (draft-ietf-secsh-filexfer-02 plus the OpenSSH extensions tether serves).
// Owns numbers only; no behaviour.

export const SFTP_VERSION = 3;

export const FXP = {
  INIT: 1,
  VERSION: 2,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  HANDLE: 102,
  DATA: 103,
  NAME: 104,
  ATTRS: 105,
  EXTENDED: 200,
  EXTENDED_REPLY: 201,
} as const;

export const FX = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8,
} as const;
export type StatusCode = (typeof FX)[keyof typeof FX];

/** SSH_FXF_* open flags. */
export const FXF = { READ: 0x01, WRITE: 0x02, APPEND: 0x04, CREAT: 0x08, TRUNC: 0x10, EXCL: 0x20 } as const;

/** SSH_FILEXFER_ATTR_* attribute presence flags. */
export const ATTR = { SIZE: 0x01, UIDGID: 0x02, PERMISSIONS: 0x04, ACMODTIME: 0x08, EXTENDED: 0x80000000 } as const;

/** OpenSSH extension names and the versions advertised in SSH_FXP_VERSION (same as sftp-server). */
export const EXT = {
  POSIX_RENAME: 'posix-rename@openssh.com',
  STATVFS: 'statvfs@openssh.com',
  FSTATVFS: 'fstatvfs@openssh.com',
  HARDLINK: 'hardlink@openssh.com',
  FSYNC: 'fsync@openssh.com',
  LSETSTAT: 'lsetstat@openssh.com',
  LIMITS: 'limits@openssh.com',
} as const;

export const ADVERTISED_EXTENSIONS: ReadonlyArray<readonly [string, string]> = [
  [EXT.POSIX_RENAME, '1'],
  [EXT.STATVFS, '2'],
  [EXT.FSTATVFS, '2'],
  [EXT.HARDLINK, '1'],
  [EXT.FSYNC, '1'],
  [EXT.LSETSTAT, '1'],
  [EXT.LIMITS, '1'],
];

/** Largest packet accepted or sent (OpenSSH's SFTP_MAX_MSG_LENGTH); reads and writes leave room for headers. */
export const MAX_PACKET_LENGTH = 256 * 1024;
export const MAX_READ_LENGTH = MAX_PACKET_LENGTH - 1024;
export const MAX_WRITE_LENGTH = MAX_PACKET_LENGTH - 1024;

/** statvfs f_flag bits. */
export const ST_RDONLY = 0x1;
export const ST_NOSUID = 0x2;
