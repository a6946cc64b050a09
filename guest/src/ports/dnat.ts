// Ports that no socket in the guest listens on, yet answer: ones a container network publishes with an iptables DNAT
// rule instead of a proxy process (Kubernetes hostPort and k3s's ServiceLB through the CNI portmap plugin, nerdctl,
// rootful Podman with netavark). They never show in /proc/net/tcp, so this reads the nat table (`iptables -t nat -S`,
// as root) and reports each such rule as a listener on the guest address it matches (0.0.0.0 without `-d`), with the
// rule's target as its command. Only the per-container chains those tools make (CNI-DN-*, NETAVARK-DN-*) count: they
// also apply to connections from the guest itself (sshd's, for the host), which Docker's own chain does not (and
// Docker runs a proxy process by default anyway). IPv4 only.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logger } from '../log.js';
import type { Listener } from './types.js';

/** Chains whose DNAT rules publish a container port on the guest. */
const PUBLISHING_CHAINS = /^(CNI-DN-|NETAVARK-DN-)/;

/** One `-A CHAIN …` line of `iptables -S`; the fields a DNAT rule for one port carries. */
const RULE = /^-A (\S+) (.*)$/;

/** More ports than this in one rule's range (Podman's `-p 8000-8010:…`) are not read as listeners. */
const MAX_RANGE = 256;

/**
 * The listeners the nat table's DNAT rules make, from `iptables -t nat -S` output: one per port of each rule in a
 * publishing chain with a protocol and a destination port or a short range. Anything else (other chains, targets,
 * negated matches, a subnet as destination) is skipped.
 */
export function parseNatRules(text: string): Listener[] {
  const out = new Map<string, Listener>();
  for (const line of text.split('\n')) {
    const m = RULE.exec(line.trim());
    if (!m || !PUBLISHING_CHAINS.test(m[1])) continue;
    const args = m[2].split(/\s+/);
    // A negated match (`! -d 127.0.0.0/8`) says where the rule does not apply: nothing here to forward.
    if (args.includes('!')) continue;
    const value = (flag: string) => {
      const i = args.indexOf(flag);
      return i >= 0 ? args[i + 1] : undefined;
    };
    if (value('-j') !== 'DNAT') continue;
    const proto = value('-p');
    const ports = portRange(value('--dport'));
    const to = value('--to-destination');
    if ((proto !== 'tcp' && proto !== 'udp') || !ports || !to) continue;
    const dest = value('-d');
    const ip = dest === undefined ? '0.0.0.0' : /^(\d+\.\d+\.\d+\.\d+)(\/32)?$/.exec(dest)?.[1];
    if (!ip) continue; // a whole subnet is no address to forward
    const command = `iptables DNAT to ${to} (${m[1]})`.slice(0, 256);
    for (let port = ports[0]; port <= ports[1]; port++) {
      out.set(`${proto}/${ip}/${port}`, { proto, family: 4, ip, port, inode: 0, uid: 0, pid: null, command });
    }
  }
  return [...out.values()];
}

/** `80` or `8000:8010` (at most MAX_RANGE ports) as [first, last]; null for anything else. */
function portRange(text: string | undefined): [number, number] | null {
  const m = /^(\d+)(?::(\d+))?$/.exec(text ?? '');
  if (!m) return null;
  const [lo, hi] = [Number(m[1]), Number(m[2] ?? m[1])];
  return lo >= 1 && hi <= 65_535 && lo <= hi && hi - lo < MAX_RANGE ? [lo, hi] : null;
}

export interface DnatSourceOptions {
  log: Logger;
  /** How often the nat table is read while it has publishing chains, and while it has none. */
  activeIntervalMs?: number;
  idleIntervalMs?: number;
  /** The command that prints the nat table (tests). */
  command?: [string, ...string[]];
}

/**
 * Reads the nat table in the background and keeps its DNAT listeners; `onChange` runs when they change. Each read
 * execs iptables (tens of ms of CPU on a large Kubernetes ruleset), so it runs every few seconds, and less often
 * while no container publishes anything.
 */
export class DnatSource {
  private rows: Listener[] = [];
  private text = '';
  private timer: NodeJS.Timeout | null = null;
  private stopped = true;
  private failed = false;

  constructor(private readonly options: DnatSourceOptions) {}

  /** The DNAT listeners as last read (fresh objects each call: the poller attributes and keeps them). */
  listeners(): Listener[] {
    return this.rows.map((l) => ({ ...l }));
  }

  start(onChange: () => void): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.read(onChange);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** One read of the nat table, outside the polling (`tether-guest ports`); empty when it cannot be read. */
  async readOnce(): Promise<Listener[]> {
    const { stdout } = await this.listTable().catch(() => ({ stdout: '' }));
    return parseNatRules(stdout);
  }

  private listTable(): Promise<{ stdout: string }> {
    // -w: legacy iptables takes the xtables lock even to list, and kube-proxy or flannel may hold it a moment.
    const [cmd, ...args] = this.options.command ?? ['iptables', '-w', '5', '-t', 'nat', '-S'];
    const env = { ...process.env, PATH: `${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}:${K3S_AUX_BIN}` };
    return run(cmd, args, { timeout: 10_000, maxBuffer: 64 << 20, env });
  }

  private read(onChange: () => void): void {
    this.listTable().then(
      ({ stdout }) => this.settled(null, stdout, onChange),
      (err: NodeJS.ErrnoException & { stderr?: string }) => this.settled(err, '', onChange),
    );
  }

  /** After a read: keep what it found (or say once why there was nothing), and schedule the next. */
  private settled(err: (NodeJS.ErrnoException & { stderr?: string }) | null, stdout: string, onChange: () => void) {
    if (this.stopped) return;
    const { activeIntervalMs = 3_000, idleIntervalMs = 10_000 } = this.options;
    let delay: number;
    if (err) {
      // No iptables (yet), no nat table, no permission: said once, and tried again now and then.
      if (!this.failed)
        this.options.log.info(
          {
            err: err.stderr?.trim() || err.message,
          },
          'cannot read iptables DNAT rules; trying again later',
        );
      this.failed = true;
      delay = err.code === 'ENOENT' ? MISSING_INTERVAL_MS : idleIntervalMs;
    } else {
      this.failed = false;
      this.update(stdout, onChange);
      const busy = this.rows.length > 0 || PUBLISHING_TEXT.test(this.text);
      delay = busy ? activeIntervalMs : idleIntervalMs;
    }
    this.timer = setTimeout(() => this.read(onChange), delay);
    this.timer.unref();
  }

  private update(text: string, onChange: () => void): void {
    if (text === this.text) return;
    this.text = text;
    const rows = parseNatRules(text);
    const key = (ls: Listener[]) => ls.map((l) => `${l.proto}/${l.ip}/${l.port}/${l.command}`).join('\n');
    if (key(rows) === key(this.rows)) return;
    this.rows = rows;
    onChange();
  }
}

const run = promisify(execFile);

/**
 * k3s brings its own iptables (and uses it for ServiceLB's and kube-proxy's rules): on a minimal image it is the only
 * one, so it is searched after the system's.
 */
const K3S_AUX_BIN = '/var/lib/rancher/k3s/data/current/bin/aux';

/** How often to look for an iptables that is not installed (a package or k3s may bring it). */
const MISSING_INTERVAL_MS = 60_000;

const PUBLISHING_TEXT = /^-N (CNI-DN-|NETAVARK-DN-)/m;
