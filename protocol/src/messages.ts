// Every message of the agent link, defined once as zod schemas; the TypeScript types are derived from them.
// Owns shapes, ranges and caps (the host does not trust the guest); knows nothing of transport or dispatch.
import { isIP } from 'node:net';
import { z } from 'zod';
import { DEFAULT_MAX_FRAME, type FrameLimits } from './frame.js';

/** Bumped on any incompatible change; both sides refuse a different version in `hello`. */
export const PROTOCOL_VERSION = 1;

/** Caps enforced on input. Generous enough for real guests, small enough that a hostile peer cannot exhaust us. */
export const LIMITS = {
  // Far above any real guest (the host forwards at most maxForwards, 4,096 by default), and low enough that
  // validating a hostile maximum costs the host about a second, not several.
  listenersPerMessage: 131_072,
  commandBytes: 256,
  // The largest UDP payload over IPv6 (65,535 minus the 8-byte header). IPv4's is 65,507: a larger one fails at the
  // socket that would send it (EMSGSIZE), and that datagram alone is dropped.
  datagramBytes: 65_527,
  fsEventsPerBatch: 10_000,
  pathBytes: 4096,
  capabilities: 64,
  nameBytes: 128,
  reasonBytes: 512,
  // UDP flows (host client address ↔ guest socket) open at once over one link; the host opens no more than the
  // guest relay takes, so the guest never has to refuse (and log) a datagram for it.
  udpFlows: 1024,
  // Datagrams wait in the link's buffer up to this many bytes, either way, before new ones are dropped: a burst of a
  // few hundred (DNS, a game, QUIC's first flight) must not be cut at the stream's 16 KiB mark.
  udpQueuedBytes: 1024 * 1024,
  // Kernel receive buffer asked for on the sockets that take such a burst (host bindings, guest relay sockets): the
  // default (208 KiB) holds about 256 small datagrams, fewer than a burst the agent reads one by one. The kernel
  // caps it at net.core.rmem_max.
  udpSocketBufferBytes: 1024 * 1024,
  // Guest socket paths one host may have watched (its unix socket forwards).
  watchedSockets: 256,
} as const;

/** msgpack values in one listener: a map of six keys and six values. */
const LISTENER_VALUES = 13;

/**
 * What an incoming frame may hold, derived from the caps above so that a peer cannot make us decode much more than
 * the largest legitimate message. Before hello only a hello may arrive: the largest the schema allows (64
 * capabilities of 128 characters, 3 UTF-8 bytes each) is 25 KB. After it, the largest message is a `ports.delta`
 * with both listener arrays full (3.4 M values; a snapshot is half that). Its bytes would not fit 16 MiB at the
 * schema's widest listener (about 350 bytes, with a 256-byte command); real listeners take 60–100 bytes, so a
 * 131,072-listener snapshot is about 12 MB. Maps are at most 13 entries wide (`info`) and a message has a handful
 * of key orders (envelope, result, listener): the budget leaves room for newer messages.
 */
export const FRAME_LIMITS = {
  beforeHello: {
    maxBytes: 32 * 1024,
    budget: { maxValues: 1024, maxMapEntries: 32, maxShapes: 16, maxDepth: 8 },
  },
  afterHello: {
    maxBytes: DEFAULT_MAX_FRAME,
    budget: {
      maxValues: 2 * LIMITS.listenersPerMessage * LISTENER_VALUES + 1024,
      maxMapEntries: 32,
      maxShapes: 256,
      maxDepth: 32,
    },
  },
} as const satisfies Record<string, FrameLimits>;

const u32 = z.number().int().min(0).max(0xffff_ffff);
/** A TCP or UDP port (0 is not one anybody listens on); shared with the host's config and control API schemas. */
export const Port = z.number().int().min(1).max(65_535);
/** An IPv4 or IPv6 address in text form; shared like Port. */
export const IpAddress = z
  .string()
  .max(64)
  .refine((s) => isIP(s) !== 0, 'expected an IPv4 or IPv6 address');
const shortText = z.string().max(LIMITS.nameBytes);
const bytes = (max: number) =>
  z.instanceof(Uint8Array).refine((b) => b.byteLength <= max, `expected at most ${max} bytes`);

// ── envelope ────────────────────────────────────────────────────────────────────────────────────────────────────

// Not strict, so that a hello of another protocol version (which may say more) is still read and its sender told
// apart as such: a host replaces a guest agent of another version. (Agents before this one read hello strictly, so
// this side must not send more than these fields.)
export const Hello = z.object({
  t: z.literal('hello'),
  v: z.number().int().min(0),
  agent: shortText, // "tether-guest/0.1.0"
  caps: z.array(shortText).max(LIMITS.capabilities),
});

export const Request = z.object({ t: z.literal('req'), id: u32, m: shortText, p: z.unknown() }).strict();

export const ResponseError = z.object({ code: shortText, message: z.string().max(4096) }).strict();
export type ResponseError = z.infer<typeof ResponseError>;

export const Response = z
  .object({ t: z.literal('res'), id: u32, ok: z.boolean(), r: z.unknown(), e: ResponseError.optional() })
  .strict();

export const Event = z.object({ t: z.literal('evt'), e: shortText, d: z.unknown() }).strict();

export const Envelope = z.discriminatedUnion('t', [Hello, Request, Response, Event]);

export type Hello = z.infer<typeof Hello>;
export type Envelope = z.infer<typeof Envelope>;

// ── ports ───────────────────────────────────────────────────────────────────────────────────────────────────────

export const Proto = z.enum(['tcp', 'udp']);

export const Listener = z
  .object({
    proto: Proto,
    family: z.union([z.literal(4), z.literal(6)]),
    ip: IpAddress,
    port: Port,
    pid: z.number().int().positive().nullable(),
    command: z.string().max(LIMITS.commandBytes).nullable(),
  })
  .strict();

const listeners = z.array(Listener).max(LIMITS.listenersPerMessage);

export const PortSnapshot = z.object({ seq: u32, listeners }).strict();
export const PortDelta = z.object({ seq: u32, added: listeners, removed: listeners }).strict();

export type Proto = z.infer<typeof Proto>;
export type Listener = z.infer<typeof Listener>;
export type PortSnapshot = z.infer<typeof PortSnapshot>;
export type PortDelta = z.infer<typeof PortDelta>;

// ── info and liveness ───────────────────────────────────────────────────────────────────────────────────────────

/** The latest time a JavaScript Date holds (ms since the epoch): a later startedAt is no time at all. */
const MAX_DATE_MS = 8.64e15;

// Not strict: a newer agent may report more, and an older host still reads what it knows.
export const Info = z.object({
  version: shortText,
  kernel: shortText,
  arch: shortText,
  hostname: shortText,
  uptimeSec: z.number().min(0),
  startedAt: z.number().min(0).max(MAX_DATE_MS), // agent start, ms since epoch
  pid: z.number().int().positive(),
  uid: z.number().int().min(0),
  caps: z.array(shortText).max(LIMITS.capabilities),
  scanIntervalMs: z.number().min(0),
  lastScanMs: z.number().min(0),
  listeners: z.number().int().min(0),
  /** Whether kernel listen events wake the scanner (else only its ticks find listeners), and from where or why not. */
  listenEvents: z.object({ on: z.boolean(), detail: z.string().max(LIMITS.reasonBytes) }).optional(),
});
export type Info = z.infer<typeof Info>;

export const Ping = z.object({ t: z.number() }).strict();

/**
 * guest → host, the agent's last message before it closes the link: why it stops, and whether the whole guest is
 * shutting down (systemd says `stopping`). Then the host waits for the guest to come back instead of starting the
 * agent again and remounting in a guest that is going away. Not strict: a newer agent may say more.
 */
export const AgentBye = z.object({ reason: shortText, systemStopping: z.boolean() });
export type AgentBye = z.infer<typeof AgentBye>;

// ── UDP relay ───────────────────────────────────────────────────────────────────────────────────────────────────

/** host → guest: one datagram of flow `flow`, for the guest listener at ip:port. */
export const UdpDatagram = z
  .object({ flow: u32, ip: IpAddress, port: Port, data: bytes(LIMITS.datagramBytes) })
  .strict();
/** guest → host: a reply on flow `flow`. */
export const UdpReply = z.object({ flow: u32, data: bytes(LIMITS.datagramBytes) }).strict();
/**
 * either way: the flow ended (idle expiry on the guest, client gone on the host). `refused`: why the guest turned
 * the flow away (no UDP listener at that address, its flow cap, the target unreachable), for the host to report.
 */
export const UdpClose = z.object({ flow: u32, refused: z.string().max(1024).optional() }).strict();

export type UdpDatagram = z.infer<typeof UdpDatagram>;
export type UdpReply = z.infer<typeof UdpReply>;

// ── file events (host → guest inotify applier) ─────────────────────────────────────────────────────────────────

/**
 * The times (seconds since the epoch) the guest applier sets to make guest watchers see a host edit when the batch
 * says `markerTouch`: the host answers a SETSTAT of exactly these times with OK and changes nothing (tether's SFTP
 * server itself; for OpenSSH's sftp-server the filter in front of it), on read-only exports too, while the guest
 * kernel raises IN_ATTRIB for the utimes all the same. Two different values, so that no `touch -d` (which sets both
 * alike) is mistaken for it.
 */
export const MARKER_TOUCH = { atime: 1, mtime: 2 } as const;
/** The capability (hello and info `caps`) of a guest agent that applies `markerTouch`. */
export const CAP_MARKER_TOUCH = 'fs.marker-touch';

export const FsEventKind = z.enum(['add', 'change', 'unlink', 'addDir', 'unlinkDir']);
export const FsEvents = z
  .object({
    /** Guest mount point the paths are relative to. */
    root: z.string().min(1).max(LIMITS.pathBytes),
    /**
     * Touch with MARKER_TOUCH: the host answers it without changing anything, with either driver (tether's SFTP
     * server, or OpenSSH's sftp-server behind the host's marker filter). The host sets it on every batch; without it
     * (a host from before the filter, for openssh mounts) touch with the current time, which the host file takes and
     * only a writable mount allows.
     */
    markerTouch: z.boolean().optional(),
    events: z
      .array(z.object({ path: z.string().max(LIMITS.pathBytes), kind: FsEventKind }).strict())
      .max(LIMITS.fsEventsPerBatch),
  })
  .strict();
export type FsEventKind = z.infer<typeof FsEventKind>;
export type FsEvents = z.infer<typeof FsEvents>;

// ── guest unix sockets (the host's unix socket forwards) ────────────────────────────────────────────────────────

/** The guest socket paths the host forwards: the agent says when one appears, goes or is replaced. */
export const SocketsWatch = z
  .object({ paths: z.array(z.string().startsWith('/').max(LIMITS.pathBytes)).max(LIMITS.watchedSockets) })
  .strict();
export const SocketChanged = z.object({ path: z.string().max(LIMITS.pathBytes) }).strict();
export type SocketsWatch = z.infer<typeof SocketsWatch>;
export type SocketChanged = z.infer<typeof SocketChanged>;

export const Empty = z.object({}).strict();

// ── tables: the single source of truth for what may be asked and announced ──────────────────────────────────────

/**
 * Which build of the agent answers (`tether-guest version`): a host replaces one that is not the build it ships. A
 * method of its own rather than a field of Info, which hosts before it read strictly.
 */
export const AgentBuild = z.object({ version: shortText, build: shortText });
export type AgentBuild = z.infer<typeof AgentBuild>;

/** Requests the guest agent answers (the host asks). */
export const methods = {
  info: { params: Empty, result: Info },
  /** Answered since tether-guest reports its build; older agents answer unknown_method. */
  'agent.build': { params: Empty, result: AgentBuild },
  ping: { params: Ping, result: Ping },
  /** Start receiving `ports.delta` events; answers with the current full snapshot. */
  'ports.subscribe': { params: Empty, result: PortSnapshot },
  /**
   * Scans now and answers with a fresh full snapshot: after a seq gap, and when a forwarded guest port refused a
   * connection (its listener most likely just closed; the scan's delta removes it).
   */
  'ports.snapshot': { params: Empty, result: PortSnapshot },
  /**
   * Replaces the set of guest socket paths this client hears `sockets.changed` about. Older agents answer
   * unknown_method: the host then looks at its sockets on a timer of its own.
   */
  'sockets.watch': { params: SocketsWatch, result: Empty },
} as const;

/** One-way events, in either direction. */
export const events = {
  'agent.bye': AgentBye,
  'ports.delta': PortDelta,
  'udp.dgram': UdpDatagram,
  'udp.reply': UdpReply,
  'udp.close': UdpClose,
  'fs.events': FsEvents,
  'sockets.changed': SocketChanged,
} as const;

export type MethodName = keyof typeof methods;
export type Params<M extends MethodName> = z.infer<(typeof methods)[M]['params']>;
export type Result<M extends MethodName> = z.infer<(typeof methods)[M]['result']>;
export type EventName = keyof typeof events;
export type EventData<E extends EventName> = z.infer<(typeof events)[E]>;

export function isMethodName(m: string): m is MethodName {
  return Object.hasOwn(methods, m);
}
export function isEventName(e: string): e is EventName {
  return Object.hasOwn(events, e);
}
