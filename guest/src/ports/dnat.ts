// Ports that no socket in the guest listens on, yet answer: ones a container network publishes with an iptables DNAT
// rule instead of a proxy process (Kubernetes hostPort and k3s's ServiceLB through the CNI portmap plugin, nerdctl,
// rootful Podman with netavark). They never show in /proc/net/tcp, so this reads the nat table (`iptables -t nat -S`,
// as root) and reports each such rule as a listener on the guest address it matches (0.0.0.0 without `-d`), with the
// rule's target as its command. Only the per-container chains those tools make (CNI-DN-*, NETAVARK-DN-*) count: they
// also apply to connections from the guest itself (sshd's, for the host), which Docker's own chain does not (and
// Docker runs a proxy process by default anyway). IPv4 only.
import { execFile } from 'node:child_process';
import type { Logger } from '../log.js';
import type { Listener } from './types.js';

/** Chains whose DNAT rules publish a container port on the guest. */
const PUBLISHING_CHAINS = /^(CNI-DN-|NETAVARK-DN-)/;

/** One `-A CHAIN …` line of `iptables -S`; the fields a DNAT rule for one port carries. */
const RULE = /^-A (\S+) (.*)$/;

/**
 * The listeners the nat table's DNAT rules make, from `iptables -t nat -S` output: one per rule in a publishing chain
 * with a protocol and a single destination port. Anything else (port ranges, other chains, other targets) is skipped.
 */
export function parseNatRules(text: string): Listener[] {
  const out = new Map<string, Listener>();
  for (const line of text.split('\n')) {
    const m = RULE.exec(line.trim());
    if (!m || !PUBLISHING_CHAINS.test(m[1])) continue;
    const args = m[2].split(/\s+/);
    const value = (flag: string) => {
      const i = args.indexOf(flag);
      return i >= 0 && args[i - 1] !== '!' ? args[i + 1] : undefined;
    };
    if (value('-j') !== 'DNAT') continue;
    const proto = value('-p');
    const port = Number(value('--dport'));
    const to = value('--to-destination');
    if ((proto !== 'tcp' && proto !== 'udp') || !Number.isInteger(port) || port < 1 || port > 65_535 || !to) continue;
    const dest = value('-d');
    const ip = dest === undefined ? '0.0.0.0' : /^(\d+\.\d+\.\d+\.\d+)(\/32)?$/.exec(dest)?.[1];
    if (!ip) continue; // a whole subnet is no address to forward
    const l: Listener = {
      proto,
      family: 4,
      ip,
      port,
      inode: 0,
      uid: 0,
      pid: null,
      command: `iptables DNAT to ${to} (${m[1]})`.slice(0, 256),
    };
    out.set(`${proto}/${ip}/${port}`, l);
  }
  return [...out.values()];
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

  private read(onChange: () => void): void {
    const [cmd, ...args] = this.options.command ?? ['iptables', '-t', 'nat', '-S'];
    execFile(cmd, args, { timeout: 10_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (this.stopped) return;
      if (err) {
        // No nat table (yet), no permission: nothing to find, said once. Without iptables there never will be.
        if (!this.failed)
          this.options.log.info('not watching iptables DNAT rules', {
            command: cmd,
            err: stderr.trim() || err.message,
          });
        this.failed = true;
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      } else if (stdout !== this.text) {
        this.failed = false;
        this.text = stdout;
        const rows = parseNatRules(stdout);
        const key = (ls: Listener[]) => ls.map((l) => `${l.proto}/${l.ip}/${l.port}/${l.command}`).join('\n');
        if (key(rows) !== key(this.rows)) {
          this.rows = rows;
          onChange();
        }
      }
      const busy = this.rows.length > 0 || PUBLISHING_TEXT.test(this.text);
      const { activeIntervalMs = 3_000, idleIntervalMs = 10_000 } = this.options;
      this.timer = setTimeout(() => this.read(onChange), busy ? activeIntervalMs : idleIntervalMs);
      this.timer.unref();
    });
  }
}

const PUBLISHING_TEXT = /^-N (CNI-DN-|NETAVARK-DN-)/m;
