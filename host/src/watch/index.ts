// Public surface of host-side watching of mounted directories (fs events for the guest's inotify applier).
export { MountWatcher, type WatchCounters } from './watcher.js';
