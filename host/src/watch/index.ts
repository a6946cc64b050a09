// Public surface of host-side watching of mounted directories (fs events for the guest's inotify applier).
export { coalesce, EventBatcher, type FsEvent } from './batch.js';
export { ECHO_WINDOW_MS, EchoFilter } from './echo.js';
export { MountWatcher, type MountWatcherOptions, type WatchCounters, type WatchState } from './watcher.js';
