// One configured mount's life in the guest: resolve the mount point there (`~`, symlinks: guest-path.ts), clear a
// stale FUSE mount, run `sshfs -o slave` on an exec channel, skip the login shell's startup output on its stdout
// (startup-output.ts), serve SFTP on its stdio, wait until the mount is visible, notice when it goes away, unmount
// it cleanly. Owns the channel, the SFTP session and the mount's state; retry policy and watching live in
// manager.ts.
import { EventEmitter } from 'node:events';
import { posix } from 'node:path';
import type { Client, ClientChannel } from 'ssh2';
import type { MountConfig } from '../config/schema.js';
import { guestText } from '../inert-text.js';
import type { Logger } from '../log.js';
import type { MountCause, MountState } from '../model.js';
import type { ChangeListener } from '../sftp/index.js';
import { describeExit, execOn, openExec } from '../ssh/exec.js';
import { SESSION_LIMIT_HINT } from '../ssh/session-limit.js';
import { shellQuote } from '../ssh/shell-quote.js';
import { startupMarker } from '../ssh/startup-marker.js';
import { describeGuestPath, resolveGuestPath } from './guest-path.js';
import { isSshfsType, mountedFsType } from './mountinfo.js';
import { type DriverSession, serveMount } from './sftp-driver.js';
import { mountPointOf, sshfsCommand } from './sshfs-options.js';
import { ClosedBeforeMarkerError, quoteStartup, skipStartupOutput, startupFileHint } from './startup-output.js';

const READY_TIMEOUT_MS = 20_000;
const UNMOUNT_TIMEOUT_MS = 5_000;
/** How long sshfs gets to end by itself after the unmount (it does in milliseconds), before its session is closed. */
const SSHFS_EXIT_WAIT_MS = 1_000;
/** The same after a lazy unmount of a busy mount point, whose users keep sshfs running until they leave. */
const LAZY_UNMOUNT_WAIT_MS = 300;
const REMOUNTING = 'the connection to the guest is back: remounting';

/** Lazy unmount: works while files are open and on a dead ("transport endpoint is not connected") mount. */
function lazyUnmountCommand(mountPoint: string): string {
  const mp = shellQuote(mountPoint);
  return `fusermount3 -uz ${mp} 2>/dev/null || fusermount -uz ${mp} 2>/dev/null || umount -l ${mp} 2>/dev/null || sudo -n umount -l ${mp}`;
}

function unmountCommand(mountPoint: string): string {
  const mp = shellQuote(mountPoint);
  return `fusermount3 -u ${mp} 2>/dev/null || fusermount -u ${mp} 2>/dev/null || umount ${mp}`;
}

async function guestFsType(client: Client, mountPoint: string, timeoutMs?: number): Promise<string | null> {
  const r = await execOn(client, 'cat /proc/self/mountinfo', timeoutMs);
  if (r.code !== 0) {
    throw new Error(
      `cannot read /proc/self/mountinfo in the guest (${describeExit(r)}): ${guestText(r.stderr.trim())}`,
    );
  }
  return mountedFsType(r.stdout, mountPoint);
}

interface Active {
  channel: ClientChannel;
  /** Null until sshfs started (the start marker arrived). */
  session: DriverSession | null;
  closed: Promise<void>;
  /** Set once the channel closed: closing an ssh2 channel twice can close a newer channel that reused its id. */
  isClosed: boolean;
  /** Why the channel ended: sshfs's last stderr, else its exit status. */
  why(): string;
  /** Resolves when the start command saw the mount in the guest's mount table (sshfsCommand's readyTag). */
  visible: Promise<void>;
}

/** Emits 'state' on every change and 'lost' (reason) when a mounted mount goes away on its own. */
export class GuestMount extends EventEmitter {
  /** As configured (may start with `~`): what users see. */
  readonly mountPoint: string;
  /**
   * The mount point resolved in the guest (absolute, symlinks followed), as /proc/self/mountinfo lists the mount;
   * null until the first mount() resolved it. Kept across suspends: the guest side of a lost mount is still there.
   */
  private guestPathValue: string | null = null;
  private stateValue: MountState = 'pending';
  private sinceValue = new Date().toISOString();
  private errorValue: string | null = null;
  private causeValue: MountCause | null = null;
  private active: Active | null = null;
  /** Bumped by every mount/suspend/unmount so late events of an older channel are ignored. */
  private generation = 0;
  /**
   * Set while the guest is going away (its agent said it shuts down): an sshfs that ends now ends with the guest, so
   * the mount shows `suspended` with this reason instead of an error.
   */
  endExpected: string | null = null;
  /**
   * Whether the mount point lies inside another of the instance's mounts, mounted: what is under it then is that
   * mount's view of host files, not guest writes (see noteUnderlying).
   */
  nested: () => boolean = () => false;
  /**
   * The mount point of another of the instance's mounts (mounting or mounted) at this resolved guest path, if any:
   * `~/x` and `/home/me/x` are one directory, and a second mount there would hide the first.
   */
  sharedWith: (guestPath: string) => string | null = () => null;
  /** Hears of each host path the guest changes through the mount (see serveMount). */
  onGuestChange: ChangeListener | undefined = undefined;
  /** Mounted at least once in this run: a later mount is a remount (see noteRemount). */
  private mountedBefore = false;
  /** The last session ended while the guest shut down: its programs went with it, nobody is left on the old mount. */
  private endedWithGuest = false;
  /** The guest's boot id at the last mount; null before it (see takeStartLine). */
  private bootId: string | null = null;
  /** Entries under the mount point at the first mount of this run; null before it (see noteUnderlying). */
  private underlyingAtFirst: number | null = null;
  /** The same at the latest remount: a warning names only what came since (earlier ones named the rest). */
  private underlyingAtLast: number | null = null;
  /** Why the mount was last not mounted (its state and reason), for the warning about what was written meanwhile. */
  private lastOutage: string | null = null;

  constructor(
    readonly config: MountConfig,
    private readonly log: Logger,
    private readonly sftpLog: Logger,
    /** `optional`: the instance is ready without this mount (the default mount of ~): its failure is a warning. */
    private readonly opts: { optional?: boolean } = {},
  ) {
    super();
    this.mountPoint = mountPointOf(config);
  }

  get state(): MountState {
    return this.stateValue;
  }
  get since(): string {
    return this.sinceValue;
  }
  get error(): string | null {
    return this.errorValue;
  }
  get cause(): MountCause | null {
    return this.causeValue;
  }
  get guestPath(): string | null {
    return this.guestPathValue;
  }

  /** Mounts (again); resolves once the mount is visible in the guest, rejects with the reason it is not. */
  async mount(client: Client): Promise<void> {
    const gen = ++this.generation;
    this.teardown('remounting');
    this.setState('mounting', null);
    try {
      const { path, shell } = await resolveGuestPath(client, this.mountPoint);
      const other = this.sharedWith(path);
      if (other !== null) {
        throw new Error(
          `mount point ${this.mountPoint} is ${path} in the guest, where mount ${other} is already: give each mount ` +
            'its own mountPoint',
        );
      }
      if (path !== this.guestPathValue && path !== this.mountPoint) {
        this.log.info({ guestPath: path }, `mount point ${this.mountPoint} is ${path} in the guest`);
      }
      this.guestPathValue = path;
      const stale = await this.hasStaleMount(client, path);
      const active = await this.start(client, gen, path, shell, stale);
      await this.waitVisible(active);
      if (gen !== this.generation) return;
      this.setState('mounted', null);
      if (this.mountedBefore && !this.endedWithGuest) this.noteRemount(path);
      this.mountedBefore = true;
      this.endedWithGuest = false;
    } catch (err) {
      if (gen !== this.generation) return;
      const reason = err instanceof Error ? err.message : String(err);
      this.teardown(reason);
      this.setState('error', reason);
      throw err;
    }
  }

  /** The guest or host lacks what this mount needs (sshfs, its directory...): `error` with the reason until mount(). */
  unmet(reason: string, cause: MountCause | null): void {
    if (this.active) return;
    this.setState('error', reason, cause);
  }

  /**
   * The SSH connection is gone (or the guest going down): drop the session; the guest side is cleaned up by the next
   * mount().
   */
  suspend(reason: string, cause: MountCause = 'ssh-down'): void {
    if (this.endExpected) this.endedWithGuest = true;
    this.generation++;
    this.teardown(reason);
    if (this.stateValue !== 'unmounted' && this.stateValue !== 'pending') this.setState('suspended', reason, cause);
  }

  /**
   * A remount is under way: the guest's requirements are checked before mount() (seconds in a slow guest), and a
   * suspended mount stops naming the outage that has passed meanwhile. The outage stays the one a later warning names.
   */
  remounting(): void {
    if (this.stateValue !== 'suspended') return;
    const outage = this.lastOutage;
    this.setState('suspended', REMOUNTING, 'remounting');
    this.lastOutage = outage;
  }

  /** Unmounts in the guest (when a client is given and connected) and ends the session. */
  async unmount(client: Client | null): Promise<void> {
    const gen = ++this.generation;
    const active = this.active;
    const path = this.guestPathValue;
    if (client && active && path !== null) {
      try {
        const r = await execOn(client, unmountCommand(path), UNMOUNT_TIMEOUT_MS);
        let wait = SSHFS_EXIT_WAIT_MS;
        if (r.code !== 0) {
          this.log.warn(
            { stderr: r.stderr.trim(), guestPath: path },
            `unmount of ${path} failed (busy: a guest process has a file or its working directory there?); detaching it lazily`,
          );
          await execOn(client, lazyUnmountCommand(path), UNMOUNT_TIMEOUT_MS);
          // A detached mount still in use keeps sshfs running until its users leave: closing the session below ends it.
          wait = LAZY_UNMOUNT_WAIT_MS;
        }
        // sshfs leaves its loop once unmounted, which closes the channel. One that does not still serves the mount
        // somewhere: in another mount namespace (a container given the directory as a volume keeps its copy).
        const ended = await Promise.race([
          active.closed.then(() => true),
          new Promise<false>((r) => setTimeout(() => r(false), wait).unref()),
        ]);
        if (!ended && r.code === 0)
          this.log.info(
            { guestPath: path },
            `sshfs of ${path} still serves a copy of the mount (another mount namespace, e.g. a container's volume); ending it`,
          );
      } catch (err) {
        const message = (err as Error).message;
        // Every session sshd allows is taken (MaxSessions, the mounts' own among them): closing this mount's channel
        // below ends its sshfs, which unmounts as it ends.
        if (message.includes(SESSION_LIMIT_HINT))
          this.log.info('no session free for the unmount command; ending sshfs through its own channel');
        else this.log.warn({ err: message }, 'could not unmount in the guest');
      }
    } else if (client && path !== null) {
      // No session (its sshfs exited: the mount is in error): a dead FUSE mount it left would stay behind.
      try {
        // Bounded like the unmount itself: `tether down` waits for this.
        if (isSshfsType(await guestFsType(client, path, UNMOUNT_TIMEOUT_MS))) {
          this.log.info('lazily unmounting the sshfs mount left by an sshfs that exited');
          await execOn(client, lazyUnmountCommand(path), UNMOUNT_TIMEOUT_MS);
        }
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'could not look for a leftover mount in the guest');
      }
    }
    if (gen !== this.generation) return;
    this.teardown('unmounted');
    this.setState('unmounted', null);
  }

  /** The configured mount point, with the resolved one when it differs, for messages. */
  private where(): string {
    return describeGuestPath(this.mountPoint, this.guestPathValue);
  }

  /** Whether a dead sshfs mount sits at the mount point (sshfs's start clears it); another filesystem there fails. */
  private async hasStaleMount(client: Client, path: string): Promise<boolean> {
    const fsType = await guestFsType(client, path);
    if (fsType === null) return false;
    if (!isSshfsType(fsType)) {
      throw new Error(`mount point ${this.where()} already has a ${fsType} filesystem mounted in the guest`);
    }
    this.log.info({ fsType }, 'lazily unmounting a stale sshfs mount');
    return true;
  }

  private async start(
    client: Client,
    gen: number,
    path: string,
    shell: string | null,
    stale: boolean,
  ): Promise<Active> {
    const marker = startupMarker();
    const countTag = `${marker.bytes.toString().trim()}-underlying`;
    // Printed on stderr once the mount shows in the guest; like the start marker, never in the command text.
    const ready = startupMarker('tether-mounted');
    const readyLine = ready.bytes.toString();
    const unmountFirst = stale ? lazyUnmountCommand(path) : undefined;
    const command = sshfsCommand(this.config, path, marker.print, { unmountFirst, countTag, printReady: ready.print });
    const channel = await openExec(client, command);
    if (gen !== this.generation) {
      // Unmounted or suspended while resolving or opening: this channel must not become the active one.
      channel.close();
      throw new Error(`mount of ${this.where()} superseded before sshfs started`);
    }
    let stderr = '';
    let seen: () => void = () => {};
    const visible = new Promise<void>((resolve) => {
      seen = resolve;
    });
    channel.stderr.setEncoding('utf8').on('data', (d: string) => {
      let text = stderr + d;
      const at = `\n${text}`.indexOf(`\n${readyLine}`);
      if (at >= 0) {
        text = text.slice(0, at) + text.slice(at + readyLine.length);
        seen();
      }
      stderr = text.slice(-2048);
    });
    const why = () => {
      const status = channel.exitStatus;
      if (stderr.trim()) return guestText(stderr.trim());
      if (status?.code === 0) return 'sshfs ended: unmounted in the guest (fusermount -u, or the guest shutting down)';
      return status ? `sshfs exited (${describeExit(status)})` : 'sshfs channel closed';
    };
    const closed = new Promise<void>((resolve) => {
      channel.once('close', () => {
        active.isClosed = true;
        active.session?.close('sshfs channel closed');
        resolve();
        if (gen !== this.generation) return;
        this.active = null;
        if (this.stateValue === 'mounted') {
          if (this.endExpected) {
            this.endedWithGuest = true;
            this.setState('suspended', this.endExpected, 'guest-stopping');
          } else this.setState('error', why());
          this.emit('lost', why());
        }
      });
    });
    channel.on('error', (err: Error) => this.log.warn({ err: err.message }, 'sshfs channel error'));
    const active: Active = { channel, session: null, closed, why, isClosed: false, visible };
    this.active = active;

    let startup: Buffer;
    try {
      startup = await skipStartupOutput(channel, marker.bytes, { timeoutMs: READY_TIMEOUT_MS, shell });
    } catch (err) {
      // The command ended before sshfs started (mkdir failed, the shell exited...): its stderr says why.
      if (err instanceof ClosedBeforeMarkerError) {
        const printed = err.output.length > 0 ? `; the guest's shell printed ${quoteStartup(err.output)}` : '';
        throw new Error(`sshfs failed to mount ${this.where()}: ${why()}${printed}`);
      }
      throw err;
    }
    if (gen !== this.generation) throw new Error(`mount of ${this.where()} superseded before sshfs started`);
    if (active.isClosed) throw new Error(`sshfs failed to mount ${this.where()}: ${why()}`);
    startup = this.takeStartLine(startup, countTag, path);
    if (startup.length > 0) {
      this.log.warn(
        { bytes: startup.length, output: quoteStartup(startup) },
        `the guest's shell printed output on startup (skipped, not served as SFTP; ${startupFileHint(shell)})`,
      );
    }
    try {
      active.session = serveMount(channel, this.config, this.sftpLog, this.onGuestChange);
    } catch (err) {
      channel.close();
      throw err;
    }
    // skipStartupOutput left the channel paused so no SFTP bytes were lost before the server's listener existed.
    channel.resume();
    return active;
  }

  /**
   * Reads (and removes) the line the start command printed before its marker (sshfsCommand's countTag): the entries
   * under the mount point, and the guest's boot id. A new boot id means the guest rebooted since the last mount
   * (also without saying so: a reset, a crash), so no guest program holds the old mount, and what lies under the
   * mount point is counted afresh.
   */
  private takeStartLine(startup: Buffer, tag: string, path: string): Buffer {
    const text = startup.toString('latin1');
    const at = text.lastIndexOf(`${tag} `);
    if (at < 0) return startup;
    const end = text.indexOf('\n', at);
    const [countText = '', bootId = ''] = text
      .slice(at + tag.length + 1, end < 0 ? undefined : end)
      .trim()
      .split(' ');
    if (bootId) {
      if (this.bootId !== null && bootId !== this.bootId) {
        this.endedWithGuest = true;
        this.underlyingAtFirst = null;
        this.underlyingAtLast = null;
      }
      this.bootId = bootId;
    }
    const count = Number(countText);
    if (countText && Number.isInteger(count)) this.noteUnderlying(count, path);
    return Buffer.concat([startup.subarray(0, at), startup.subarray(end < 0 ? startup.length : end + 1)]);
  }

  /**
   * sshfs ends with its SSH channel and unmounts: until the remount, the mount point is the plain directory under
   * it, and what guest programs write there is hidden once the mount is back. A mount point that holds more entries
   * at a remount than at the first mount of this run had such writes: they are named, with the way to them.
   */
  private noteUnderlying(count: number, path: string): void {
    if (this.nested()) return;
    if (this.underlyingAtFirst === null) {
      this.underlyingAtFirst = count;
      this.underlyingAtLast = count;
      // Not a fault (a guest directory mounted over), but what the mount hides is worth a line.
      if (count > 0)
        this.log.info(
          { guestPath: path, underlying: count },
          `the mount hides ${count} ${count === 1 ? 'entry' : 'entries'} of ${path}`,
        );
      return;
    }
    const added = count - (this.underlyingAtLast ?? this.underlyingAtFirst);
    this.underlyingAtLast = count;
    if (added <= 0) return;
    const hidden = count - this.underlyingAtFirst;
    const inAll = hidden > added ? ` (${hidden} in all since the first mount)` : '';
    const parent = posix.dirname(path);
    this.log.warn(
      { guestPath: path, hiddenEntries: hidden },
      `${added} ${added === 1 ? 'entry was' : 'entries were'} written to ${path} in the guest while it was not mounted (${this.lastOutage ?? 'not mounted yet'})${inAll}; ` +
        `the mount hides them now: to move them over, in the guest: sudo mkdir -p /mnt/under && sudo mount --bind ` +
        `${shellQuote(parent)} /mnt/under, then look in /mnt/under/${shellQuote(posix.basename(path))} ` +
        '(sudo umount /mnt/under after)',
    );
  }

  /**
   * A remount is a new mount: guest programs that used the old one keep it (a working directory or open file there
   * fails with ENOTCONN, a file watch hears nothing more, not even that it ended). Only the user can restart them.
   */
  private noteRemount(path: string): void {
    this.log.warn(
      { guestPath: path, remounted: true },
      `mount ${this.mountPoint} was mounted again: guest programs that were using it (a working directory or open ` +
        'files there, file watchers such as a dev server or `tsc --watch`) still hold the old mount and need a restart',
    );
  }

  /** Resolves once the guest sees the mount; rejects when sshfs ends first or it does not show in time. */
  private async waitVisible(active: Active): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`sshfs did not mount ${this.where()} within ${READY_TIMEOUT_MS / 1000}s`)),
        READY_TIMEOUT_MS,
      );
    });
    const ended = active.closed.then(() => {
      throw new Error(`sshfs failed to mount ${this.where()}: ${active.why()}`);
    });
    try {
      await Promise.race([active.visible, ended, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private teardown(reason: string): void {
    const active = this.active;
    this.active = null;
    if (!active) return;
    active.session?.close(reason);
    if (!active.isClosed) active.channel.close();
  }

  private setState(state: MountState, error: string | null, cause: MountCause | null = null): void {
    if (state === this.stateValue && error === this.errorValue && cause === this.causeValue) return;
    if ((state === 'error' || state === 'suspended') && error) this.lastOutage = `${state}: ${error}`;
    this.stateValue = state;
    this.errorValue = error;
    this.causeValue = error === null ? null : cause;
    this.sinceValue = new Date().toISOString();
    const line = { state, ...(error ? { error } : {}) };
    // The mount point and reason in the message itself: `status` lists warnings and errors by message.
    const msg = `mount ${this.mountPoint} ${state}${error ? `: ${error}` : ''}`;
    if (state === 'error') this.log[this.opts.optional ? 'warn' : 'error'](line, msg);
    // The remount is the way back, not a second outage: `status` lists the outage once.
    else if (state === 'suspended' && cause !== 'remounting') this.log.warn(line, msg);
    else this.log.info(line, msg);
    this.emit('state', state);
  }
}
