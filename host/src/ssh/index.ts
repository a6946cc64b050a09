// The SSH layer of the host agent: one session per VM, its host key pinning, and what a guest unix socket looks like
// through it.

export { authorizedKeyFix, sshdForwardingFix } from './advice.js';
export type { ExecResult } from './exec.js';
export { GuestCommandTimeoutError } from './exec.js';
export {
  guestSocketState,
  type SocketShell,
  StreamLocalRefusedError,
  socketOpenFailure,
  streamLocalRefusal,
} from './guest-socket.js';
export { describeKey, type HostKey, readPinned } from './hostkey.js';
export { guestServerPort } from './server-port.js';
export {
  ChannelOpenError,
  OPEN_ADMINISTRATIVELY_PROHIBITED,
  OPEN_CONNECT_FAILED,
  SshNotConnectedError,
  SshSession,
  type SshSessionOptions,
} from './session.js';
export { sshTarget } from './target.js';
