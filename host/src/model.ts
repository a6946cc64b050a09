// What a running host agent exposes to operators: the shapes served by the control API and printed by the CLI.
// The agent wiring (agent/) produces them; control/ serves them; cli/ renders them. Nothing here does I/O.
import { portOfAddr } from './address.js';
import type { Config, MountConfig } from './config/schema.js';
import type { ForwardSpec } from './control/spec.js';

export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

export const FORWARD_STATES = ['forwarding', 'conflict', 'privileged', 'ignored', 'suspended', 'error'] as const;
export type ForwardState = (typeof FORWARD_STATES)[number];

/** Where a forward came from: a guest listener, a static rule in tether.yaml, or `tether forward add`. */
export type ForwardSource = 'detected' | 'static' | 'runtime';

/**
 * What holds the host address of a forward in `conflict`, for doctor and scripts (its error says it for people):
 * another of tether's own forwards (its id, and the host address it listens on), a forward of another tether instance
 * under the same TETHER_HOME (its name, the forward's id there, the address, and whether that forward serves or is
 * suspended, its guest unreachable, while it keeps the port), a connection from that port that no
 * listener shows (it passes by itself), or another process.
 */
export type ForwardHolder =
  | { kind: 'forward'; id: string; address: string }
  | { kind: 'instance'; instance: string; id: string; address: string; state: 'forwarding' | 'suspended' }
  | { kind: 'connection' }
  | { kind: 'process' };

export interface ForwardView {
  /** Stable while the forward exists, e.g. `tcp/127.0.0.1:8080` (guest side) or `unix//var/run/docker.sock`. */
  id: string;
  proto: 'tcp' | 'udp' | 'unix';
  /** `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:53`, or a socket path. */
  guestAddr: string;
  /** Host listeners (or the one a conflict is about), e.g. `["127.0.0.1:8080", "[::1]:8080"]` or a socket path. */
  hostAddrs: string[];
  state: ForwardState;
  /** The guest process holding the port; pid 0 when the guest kernel answers it (a DNAT rule, named in command). */
  process: { pid: number; command: string } | null;
  connections: number;
  bytesIn: number;
  bytesOut: number;
  /** ISO 8601 time of the last state change. */
  since: string;
  error: string | null;
  /** What holds the host address while the state is `conflict`; null otherwise. */
  heldBy: ForwardHolder | null;
  /** What `error` comes from, when more than the state tells (see FORWARD_CAUSES); null otherwise. */
  cause: ForwardCause | null;
  source: ForwardSource;
}

/**
 * Why a forward does not serve, as a code for doctor, the CLI and scripts to act on: its error says the same for
 * people, in words that may change. Host addresses that cannot be bound have none: `conflict`, `privileged` and
 * heldBy say it.
 * - `removed`: ignored by `forward rm`, until `tether down` or a `forward add` of its port;
 * - `rule`: ignored by the rules (an ignore rule, the guest's sshd port, a guest address no rule forwards);
 * - `served-elsewhere`: ignored, as an explicit forward serves its guest port from another host port;
 * - `ssh-down`, `link-down`: suspended while the SSH connection, or the guest agent's link, is down;
 * - `service-down`: a unix forward's guest socket has nothing serving it (missing, or left by a stopped service);
 *   the forward serves again by itself once the service is back;
 * - `guest-socket`: a unix forward's guest socket refuses the login user (no access, not a socket);
 * - `sshd-refuses`: the guest's sshd prohibits the forward's channels;
 * - `host-socket-taken`: a unix forward's host socket already serves another forward.
 */
export const FORWARD_CAUSES = [
  'removed',
  'rule',
  'served-elsewhere',
  'ssh-down',
  'link-down',
  'service-down',
  'guest-socket',
  'sshd-refuses',
  'host-socket-taken',
] as const;
export type ForwardCause = (typeof FORWARD_CAUSES)[number];

/**
 * A guest service on its own port below 1024 that the host user may not bind (chronyd's UDP 323, an MTA on 25): the
 * normal state of a setup run without root, not a fault to warn of at every `up` or list among `status`'s errors. A
 * forward asked for (forward add, a static rule) or mapped onto such a host port by a rule is one.
 */
export function isGuestServiceBelow1024(f: {
  state: ForwardView['state'] | null;
  source: ForwardSource;
  guestAddr: string;
  hostAddrs: readonly string[];
}): boolean {
  const guestPort = portOfAddr(f.guestAddr);
  return (
    f.state === 'privileged' &&
    f.source === 'detected' &&
    f.hostAddrs.length > 0 &&
    f.hostAddrs.every((a) => portOfAddr(a) === guestPort)
  );
}

/**
 * Whether a forward's error is only its guest service being down (no socket, or one nothing listens on): it serves
 * again by itself once the service is back, so it needs nobody to act.
 */
export function waitsForGuestService(f: Pick<ForwardView, 'proto' | 'state' | 'cause'>): boolean {
  return f.proto === 'unix' && f.state === 'error' && f.cause === 'service-down';
}

/** The order `forward ls` lists forwards in: by guest port, as `docker ps` and `limactl` do; unix sockets last. */
export function compareForwards(a: ForwardView, b: ForwardView): number {
  const unix = Number(a.proto === 'unix') - Number(b.proto === 'unix');
  if (unix !== 0 || a.proto === 'unix') return unix || a.id.localeCompare(b.id);
  const port = (v: ForwardView) => portOfAddr(v.guestAddr) ?? 0;
  return port(a) - port(b) || a.id.localeCompare(b.id);
}

/** The keys `tether forward ls --json` prints, in order (the public contract). */
export const FORWARD_JSON_KEYS = [
  'proto',
  'guestAddr',
  'hostAddrs',
  'state',
  'process',
  'connections',
  'bytesIn',
  'bytesOut',
  'since',
  'error',
] as const;

export const MOUNT_STATES = ['pending', 'mounting', 'mounted', 'suspended', 'error', 'unmounted'] as const;
export type MountState = (typeof MOUNT_STATES)[number];

/** How many of `items` are in each of `states` (every state present, 0 when none), and the total. */
export function countStates<S extends string>(
  states: readonly S[],
  items: readonly { state: S }[],
): Record<S, number> & { total: number } {
  const counts = Object.fromEntries(states.map((st) => [st, 0])) as Record<S, number>;
  for (const item of items) counts[item.state]++;
  return { ...counts, total: items.length };
}

/**
 * Why a mount is not mounted, or a mount requirement not met, as a code for doctor and scripts: the error or detail
 * beside it says the same for people, in words that may change.
 * - `host-directory`: the exported host directory is missing, not a directory, or unreadable;
 * - `sshfs-missing`, `fuse-device`, `fuse-conf`: the guest lacks sshfs, a usable /dev/fuse, or user_allow_other;
 * - `mount-point-hides-home`: mounting would hide the SSH user's home; only a mountPoint in tether.yaml changes it;
 * - `mount-point-taken`: another filesystem, or a directory the SSH user may not mount on, is there;
 * - `mount-point-not-creatable`: the SSH user cannot create it (and sudo -n could not);
 * - `guest-unchecked`: a command that checks the guest failed, so nothing is known;
 * - `guest-stopping`, `ssh-down`: waiting for the guest to come back, or for the SSH connection;
 * - `remounting`: both are back and the remount is under way (the guest's requirements are checked first).
 */
export const MOUNT_CAUSES = [
  'host-directory',
  'sshfs-missing',
  'fuse-device',
  'fuse-conf',
  'mount-point-hides-home',
  'mount-point-taken',
  'mount-point-not-creatable',
  'guest-unchecked',
  'guest-stopping',
  'ssh-down',
  'remounting',
] as const;
export type MountCause = (typeof MOUNT_CAUSES)[number];

/** Causes that nothing done in the guest or on the host fixes, only a change to tether.yaml: retrying cannot help. */
export const CONFIG_ONLY_CAUSES: ReadonlySet<MountCause> = new Set(['mount-point-hides-home']);

export interface MountView {
  location: string;
  /** As configured: may start with `~` (the guest user's home). */
  mountPoint: string;
  /**
   * The mount point as resolved in the guest (absolute, symlinks followed): by its mount, or before that by the check
   * of its requirements (a mount they hold shows it too); null until the guest was asked.
   */
  guestPath: string | null;
  driver: MountConfig['driver'];
  writable: boolean;
  state: MountState;
  /** `watching`, `degraded` (watch incomplete: some host edits are not propagated) or `off` (off, or not mounted). */
  inotify: 'watching' | 'degraded' | 'off';
  since: string;
  error: string | null;
  /** What `error` comes from, when tether knows (see MOUNT_CAUSES); null otherwise (a failed sshfs, say). */
  cause: MountCause | null;
}

type RequirementState = 'pending' | 'waiting' | 'ok' | 'failed' | 'skipped';

/**
 * The host agent's boot requirements by their 1-based index, in the order `up` shows them. Mounts ready exists only
 * with mounts configured (the default mount of ~ included), and is always the last.
 */
export const REQUIREMENT = {
  sshReachable: 1,
  hostKey: 2,
  provisioned: 3,
  agentRunning: 4,
  mountsReady: 5,
} as const;

export interface RequirementView {
  /** 1-based position, as in "waiting for requirement 2 of 5". */
  index: number;
  total: number;
  name: string;
  state: RequirementState;
  detail: string | null;
  elapsedMs: number;
}

export interface LoggedError {
  time: string;
  component: string;
  msg: string;
  /** When a later line showed its subject healthy again (problem-subjects.ts); null while it may still hold. */
  resolvedAt: string | null;
  /** 'removed': it was over because its subject went away (a forward removed), not because it recovered. */
  resolution?: 'removed';
}

/** Fields of a log line that carry the reason of a warning or error, in the order they are looked at. */
const REASON_FIELDS = ['error', 'err', 'reason'] as const;

/**
 * A warning's or error's text as `status` lists it (LoggedError.msg): the log line's message, followed by the reason
 * the line carries in a field (`error`, `err` as a string, an Error or pino's serialised `{message}`, `reason`) when
 * the message does not already say it, so "mount error" does not reach the operator without its why.
 */
export function problemMessage(msg: string, fields: unknown): string {
  if (typeof fields !== 'object' || fields === null) return msg;
  for (const key of REASON_FIELDS) {
    const value = (fields as Record<string, unknown>)[key];
    const detail =
      typeof value === 'string'
        ? value
        : typeof value === 'object' && value !== null && typeof (value as Error).message === 'string'
          ? (value as Error).message
          : '';
    if (detail) return msg.includes(detail) ? msg : `${msg}: ${detail}`;
  }
  return msg;
}

export interface GuestView {
  version: string;
  /** The agent's build hash; null from an agent that does not report it. */
  build: string | null;
  hostname: string;
  kernel: string;
  arch: string;
  scanIntervalMs: number;
  /**
   * Whether the kernel's listen events wake the guest's scanner (a new TCP listener is seen within milliseconds), and
   * from which tracefs, or why not; null from an agent that does not say.
   */
  listenEvents: { on: boolean; detail: string } | null;
  agentPid: number;
  agentStartedAt: string;
  listeners: number;
}

export interface StatusView {
  name: string;
  pid: number;
  startedAt: string;
  /** The build of the host code the agent runs (hostBuild); null when unknown (run from sources, or stopped). */
  build: string | null;
  /**
   * `starting` until every requirement is ok, `ready` after, `degraded` while the guest agent link is down or a
   * failed mount requirement (5) is not met yet, `failed` when another requirement failed (`up` then stops it),
   * `stopping` from the moment it was asked to stop.
   */
  state: 'starting' | 'ready' | 'degraded' | 'failed' | 'stopping';
  ssh: { target: string; state: ConnectionState; since: string; lastError: string | null; reconnects: number };
  guest: GuestView | null;
  /** The link to the guest agent over SSH. */
  link: {
    /** Whether it is up, and why it last failed. */
    up: boolean;
    lastError: string | null;
    /** Why the guest agent in use is not this host's build (replacing it failed or did not help). */
    outdated: string | null;
    /** The guest agent's socket in the guest (guestAgent.socket, or the login user's own: provisioning). */
    socket: string;
    /** Why the guest agent is awaited rather than restarted (its guest said it shuts down), or null. */
    guestStopping: string | null;
    /** Whether the host agent is installing or starting the guest agent right now (provisioning). */
    provisioning: boolean;
    /** What that run is doing now (`uploading tether-guest-linux-x64: 50 of 100 MB`); null when none runs. */
    provisionStep: string | null;
    /** Why the host agent's last try to install or start the guest agent failed; null once one succeeds. */
    provisionError: string | null;
    /**
     * While the link is down: when the host agent next starts the guest agent (ISO time; soon after a crash it waits
     * a few seconds first), null when it will not (provisioning off, the guest shuts down, the socket is blocked).
     */
    restartAt: string | null;
  };
  requirements: RequirementView[];
  /** Forwards by state; `capped`: guest listeners left out by maxForwards (neither forwarded nor listed). */
  forwards: Record<ForwardState, number> & { total: number; capped: number };
  mounts: Record<MountState, number> & { total: number };
  /**
   * Why the agent's last run stopped, for a stopped instance (from its log); while it stops (state `stopping`), why
   * it was asked to; null while it runs.
   */
  stopReason: string | null;
  /** Each mount's state, as `tether mount ls --json` lists it. */
  mountStates: MountView[];
  lastErrors: LoggedError[];
  logFile: string;
}

/**
 * `tether status --json` of a stopped instance: the keys of a running agent's StatusView, empty, so that scripts read
 * the same keys either way; what its last run's log tells; and why its tether.yaml does not load, when it does not
 * (its SSH target and guest socket are then unknown).
 */
export type StoppedStatusView = Omit<StatusView, 'pid' | 'startedAt' | 'state' | 'ssh' | 'link'> & {
  pid: null;
  startedAt: null;
  state: 'stopped';
  ssh: Omit<StatusView['ssh'], 'target' | 'state' | 'since'> & { target: string | null; state: 'closed'; since: null };
  link: Omit<StatusView['link'], 'socket'> & { socket: string | null };
  configError?: string;
};

// A request to add a forward at runtime (`tether forward add`): typed by the control API's schema, imported as a
// type only so that zod stays out of the CLI's startup.
export type { ForwardSpec };

/** Pushed on the control API's event stream (`/v1/events`). */
export type AgentEvent =
  | { type: 'forward'; forward: ForwardView }
  | { type: 'forward-removed'; id: string }
  | { type: 'mount'; mount: MountView }
  | { type: 'connection'; state: ConnectionState; reason: string | null }
  | { type: 'requirement'; requirement: RequirementView }
  | { type: 'status'; state: StatusView['state'] };

/**
 * The running agent as the control API sees it. Implemented by agent/ (HostAgent); control/ depends only on this.
 * Emits `event` (AgentEvent).
 */
export interface AgentApi {
  readonly name: string;
  readonly config: Config;
  status(): StatusView;
  /** Fetches what status() shows from the guest live (e.g. its current scan interval); never rejects. */
  refreshStatus?(): Promise<void>;
  forwards(): ForwardView[];
  mounts(): MountView[];
  addForward(spec: ForwardSpec): Promise<ForwardView>;
  /** Removes a runtime or static forward by id; detected forwards are turned into `ignored`. */
  removeForward(id: string): Promise<void>;
  /**
   * After a failed mount requirement (5): checks the guest's mount requirements and mounts again now, instead of at
   * the next backoff step (`tether up` on a degraded instance, once the user fixed the guest). False when there is
   * nothing to retry.
   */
  retryMounts?(): boolean;
  stop(reason: string): Promise<void>;
  on(event: 'event', listener: (e: AgentEvent) => void): unknown;
  off(event: 'event', listener: (e: AgentEvent) => void): unknown;
}
