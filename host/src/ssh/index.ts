// The SSH layer of the host agent: one session per VM, its host key pinning, and what a guest unix socket looks like
// through it.
export {
  type GuestSocketState,
  type GuestSocketView,
  guestSocketState,
  type SocketShell,
  StreamLocalRefusedError,
  socketOpenFailure,
  streamLocalRefusal,
} from './guest-socket.js';
export { checkHostKey, describeKey, type HostKey, HostKeyMismatchError, readPinned } from './hostkey.js';
export { guestServerPort, parseServerPort } from './server-port.js';
export {
  ChannelOpenError,
  CIPHERS,
  type ExecResult,
  OPEN_ADMINISTRATIVELY_PROHIBITED,
  OPEN_CONNECT_FAILED,
  SshNotConnectedError,
  SshSession,
  type SshSessionOptions,
} from './session.js';
export { sshTarget } from './target.js';
