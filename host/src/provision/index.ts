// Guest agent provisioning: the public surface used by the agent wiring and `tether doctor`.
export {
  ensureGuestAgent,
  type GuestShell,
  ownAgentSocket,
  type ProvisionAction,
  type ProvisionOptions,
  type ProvisionResult,
  runningAgentSocket,
} from './ensure.js';
export {
  archOf,
  BUNDLE_FILE,
  defaultBundleDir,
  type GuestArch,
  type GuestManifest,
  nodeUsable,
  outdatedAgent,
  readManifest,
} from './manifest.js';
