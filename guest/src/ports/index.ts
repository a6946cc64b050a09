// Public surface of the guest port scanner: a leaf that reads /proc and returns listening sockets.

export { TableAnchors } from './anchors.js';
export {
  COMMAND_MAX_BYTES,
  findSocketOwners,
  readCommand,
  type SocketOwner,
  socketAt,
  socketInodesOf,
} from './attribution.js';
export { DnatSource, type DnatSourceOptions, parseNatRules } from './dnat.js';
export { GatedScanner, type GatedTableStats } from './gate.js';
export { ListenEvents, type ListenEventsOptions, type ListenEventsState, type ScanTrigger } from './listen-events.js';
export { ListenerProbe, PROBES_PER_TICK } from './liveness.js';
export {
  type ListenerSource,
  type PortDelta,
  PortPoller,
  type PortPollerOptions,
  type PortPollerStats,
  type PortSnapshot,
  scanOnce,
} from './poller.js';
export {
  formatIPv4Word,
  formatIPv6Bytes,
  formatIPv6Words,
  PROC_NET_TABLES,
  ProcNetScanner,
  type ProcNetScannerOptions,
  type ProcNetTable,
} from './procnet.js';
export { type SocketCounts, SockstatReader } from './sockstat.js';
export { type Listener, listenerKey } from './types.js';
