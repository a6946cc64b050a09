// The SSH layer of the host agent: one session per VM and its host key pinning.
export { checkHostKey, describeKey, type HostKey, HostKeyMismatchError, readPinned } from './hostkey.js';
export {
  ChannelOpenError,
  CIPHERS,
  type ExecResult,
  HOST_KEY_FILE,
  OPEN_ADMINISTRATIVELY_PROHIBITED,
  SshNotConnectedError,
  SshSession,
  type SshSessionOptions,
} from './session.js';
