// Guest agent provisioning: the public surface used by the agent wiring and `tether doctor`.
export { ensureGuestAgent, type GuestShell, runningAgentSocket } from './ensure.js';
export { BUNDLE_FILE, defaultBundleDir, outdatedAgent, readManifest } from './manifest.js';
