// Turning failures into SFTP status codes: tether's own refusals (SftpStatusError) and host errno errors,
// mapped the way OpenSSH's sftp-server maps them so sshfs sees the errno it expects.

import { FX, type StatusCode } from './constants.js';
import { MalformedPacketError } from './packet.js';

/** A request refused with a specific SFTP status (confinement, read-only, bad handle, ...). */
export class SftpStatusError extends Error {
  override name = 'SftpStatusError';
  constructor(
    readonly status: StatusCode,
    message: string,
  ) {
    super(message);
  }
}

const ERRNO_STATUS: Record<string, StatusCode> = {
  ENOENT: FX.NO_SUCH_FILE,
  ENOTDIR: FX.NO_SUCH_FILE,
  EBADF: FX.NO_SUCH_FILE,
  ELOOP: FX.NO_SUCH_FILE,
  EPERM: FX.PERMISSION_DENIED,
  EACCES: FX.PERMISSION_DENIED,
  EFAULT: FX.PERMISSION_DENIED,
  EROFS: FX.PERMISSION_DENIED,
  ENAMETOOLONG: FX.BAD_MESSAGE,
  EINVAL: FX.BAD_MESSAGE,
  ENOSYS: FX.OP_UNSUPPORTED,
  ENOTSUP: FX.OP_UNSUPPORTED,
};

export function toStatus(err: unknown): { status: StatusCode; message: string } {
  if (err instanceof SftpStatusError) return { status: err.status, message: err.message };
  if (err instanceof MalformedPacketError) return { status: FX.BAD_MESSAGE, message: err.message };
  const e = err as NodeJS.ErrnoException;
  const status = (e?.code ? ERRNO_STATUS[e.code] : undefined) ?? FX.FAILURE;
  return { status, message: e?.message ?? String(err) };
}
