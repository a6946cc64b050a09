// Public surface of the guest port scanner: a leaf that reads /proc and returns listening sockets.

export { TableAnchors } from './anchors.js';
export { DnatSource } from './dnat.js';
export { ListenEvents, type ListenEventsState } from './listen-events.js';
export { PortPoller, type ScanDelta, type ScanSnapshot, scanOnce } from './poller.js';
export { type Listener, listenerKey } from './types.js';
