// The shape of tether.yaml, defined once as a zod schema; every config type in the host derives from it.
// Owns keys, defaults and constraints; loading and error reporting live in load.ts.
import { posix } from 'node:path';
import { IpAddress, Port } from '@tether/protocol';
import { z } from 'zod';
import { isLoopbackHost, sshPortTaken, takesSshPort } from '../address.js';

/**
 * The guest agent's socket unless tether.yaml names another (guest/src/agent/socket.ts serves on the same by
 * default). A login user without root or sudo gets one in its install directory instead (provision/ensure.ts).
 */
export const DEFAULT_GUEST_SOCKET = '/run/tether/agent.sock';

const portRange = z.tuple([Port, Port]).refine(([a, b]) => a <= b, 'expected [low, high] with low <= high');
/**
 * A directory in the guest: absolute, or `~` / `~/...` for the SSH user's home there, expanded in the guest when
 * used (the host does not know that home). A relative path would depend on the guest command's working directory
 * and could not be found in the guest's mountinfo, so it is refused.
 */
const guestDir = z
  .string()
  .min(1)
  .refine(
    (p) => p.startsWith('/') || p === '~' || p.startsWith('~/'),
    "expected an absolute guest path, or ~ or ~/... for the SSH user's home in the guest",
  );

export const SshConfig = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: Port.default(22),
    user: z.string().min(1),
    /** Private key file; `~` expands to the host user's home. */
    identityFile: z.string().min(1).optional(),
    /** Use the running ssh-agent (SSH_AUTH_SOCK) as well. */
    useAgent: z.boolean().default(true),
    /**
     * Seconds between keepalives; the link is declared dead after keepaliveCountMax misses. At least 1: a keepalive
     * that has to be answered within milliseconds fails under ordinary load, and the link would reconnect for good.
     */
    keepaliveInterval: z.number().min(1).max(3600).default(10),
    keepaliveCountMax: z.number().int().min(1).max(100).default(3),
  })
  .strict();

export const GuestAgentConfig = z
  .object({
    /** Unix socket of tether-guest inside the guest. */
    socket: z
      .string()
      .startsWith('/', `expected an absolute guest path, e.g. ${DEFAULT_GUEST_SOCKET}`)
      .default(DEFAULT_GUEST_SOCKET),
    /** auto: upload and start/install the guest agent when missing or outdated; never: expect it to run. */
    provision: z.enum(['auto', 'never']).default('auto'),
    /** Guest directory the agent is uploaded to (relative paths, and `~/...`, are under the SSH user's home). */
    installDir: z.string().min(1).default('.tether-guest'),
  })
  .strict();

/** A host address to listen on: an IPv4-mapped IPv6 one (::ffff:127.0.0.1) cannot be bound, its IPv4 address can. */
const HostIp = IpAddress.refine((ip) => !/^::ffff:\d/i.test(ip), {
  error: (issue) =>
    `expected the IPv4 address itself (${String(issue.input).replace(/^::ffff:/i, '')}): a host cannot listen on ${String(issue.input)}`,
});

/** A rule for detected guest listeners (Lima semantics: first match wins). */
export const PortRule = z
  .object({
    guestIP: IpAddress.default('127.0.0.1'),
    guestPort: Port.optional(),
    guestPortRange: portRange.optional(),
    hostIP: HostIp.optional(),
    hostPort: Port.optional(),
    hostPortRange: portRange.optional(),
    proto: z.enum(['tcp', 'udp', 'any']).default('any'),
    ignore: z.boolean().default(false),
    /** Forward at start even before (or without) the guest reporting a listener; TCP only. */
    static: z.boolean().default(false),
  })
  .strict()
  .superRefine((r, ctx) => {
    const both = (one: 'guestPort' | 'hostPort', range: 'guestPortRange' | 'hostPortRange') =>
      r[one] !== undefined && r[range] !== undefined;
    if (both('guestPort', 'guestPortRange'))
      ctx.addIssue({ code: 'custom', message: 'give guestPort or guestPortRange, not both', path: ['guestPort'] });
    if (both('hostPort', 'hostPortRange'))
      ctx.addIssue({ code: 'custom', message: 'give hostPort or hostPortRange, not both', path: ['hostPort'] });
    // Which of the two is meant is not known: comparing the lengths would only add a guess to the error.
    if (both('guestPort', 'guestPortRange') || both('hostPort', 'hostPortRange')) return;
    const hostKey = r.hostPort !== undefined ? 'hostPort' : 'hostPortRange';
    const hostGiven = r.hostPort !== undefined || r.hostPortRange !== undefined;
    if (hostGiven && r.guestPort === undefined && r.guestPortRange === undefined && !r.ignore) {
      ctx.addIssue({
        code: 'custom',
        message: `${hostKey} needs guestPort or guestPortRange: the guest port(s) to forward there`,
        path: ['guestPort'],
      });
      return;
    }
    const g = r.guestPortRange ?? (r.guestPort ? [r.guestPort, r.guestPort] : [1, 65_535]);
    const h = r.hostPortRange ?? (r.hostPort ? [r.hostPort, r.hostPort] : g);
    // An inverted range is reported by itself (portRange); its length says nothing more.
    if (g[0] <= g[1] && h[0] <= h[1] && g[1] - g[0] !== h[1] - h[0])
      ctx.addIssue({
        code: 'custom',
        message: `host range ${h[0]}-${h[1]} must be as long as guest range ${g[0]}-${g[1]}`,
        path: [hostKey],
      });
    if (r.static && (r.guestPort === undefined || r.proto === 'udp'))
      ctx.addIssue({ code: 'custom', message: 'a static rule needs a guestPort and proto tcp', path: ['static'] });
  });

/** A unix socket forward: guest socket file → host socket file (e.g. docker.sock). */
export const SocketRule = z
  .object({
    guestSocket: z.string().startsWith('/', 'expected an absolute guest path, e.g. /var/run/docker.sock'),
    /** Default: <instance dir>/<basename of guestSocket>. */
    hostSocket: z.string().min(1).optional(),
  })
  .strict();

export const PortForward = z.union([SocketRule, PortRule]);

export const MountConfig = z
  .object({
    /** Host directory to export; `~` expands on the host (a bare `~` in YAML is read as `~`, see load.ts). */
    location: z.string().min(1),
    /** Where it appears in the guest; defaults to the same path as location. `~` is the guest user's home. */
    mountPoint: guestDir.optional(),
    writable: z.boolean().default(false),
    driver: z.enum(['builtin', 'openssh']).default('builtin'),
    /** Propagate host file events so guest watchers (inotify) see host edits. */
    inotify: z.boolean().default(true),
    /** Basenames not watched for inotify propagation, besides DEFAULT_WATCH_IGNORE (unless ignoreDefaults is false). */
    ignore: z.array(z.string().min(1)).default([]),
    ignoreDefaults: z.boolean().default(true),
    /** Extra sshfs -o options, e.g. ["cache_timeout=5"]. */
    sshfs: z.array(z.string().min(1)).default([]),
  })
  .strict();

/**
 * Basenames never watched at any depth, whatever a mount's `ignore` adds: dependency trees, VCS data, caches and
 * toolchains, which hold most of a home directory's files and would cost the watcher memory (about 5 KiB a file)
 * while their changes matter to no guest watcher.
 */
export const DEFAULT_WATCH_IGNORE: readonly string[] = [
  'node_modules',
  '.git',
  '.cache',
  '.npm',
  '.venv',
  '__pycache__',
  'target',
  '.Trash',
  'Library',
  '.cargo',
  '.rustup',
  '.m2',
  '.gradle',
  '.nvm',
  '.pyenv',
  '.local',
  '.vscode-server',
];

export const Config = z
  .object({
    ssh: SshConfig,
    guestAgent: GuestAgentConfig.default(GuestAgentConfig.parse({})),
    portForwards: z.array(PortForward).default([]),
    /** Absent: the host's home directory, read-only. An empty list: no mounts. */
    mounts: z.array(MountConfig).optional(),
    /** Upper bound on forwarded guest listeners; more are reported and ignored. */
    maxForwards: z.number().int().min(1).max(65_535).default(4096),
  })
  .strict()
  .superRefine((c, ctx) => {
    // A static rule onto the port this host reaches the VM's sshd on would take localhost:PORT from it (on ::1, or on
    // 127.0.0.1 once the VM stops).
    const hostSshPort = isLoopbackHost(c.ssh.host) ? c.ssh.port : undefined;
    c.portForwards.forEach((r, i) => {
      if (!('static' in r) || !r.static || r.ignore) return;
      const hostPort = r.hostPort ?? r.hostPortRange?.[0] ?? r.guestPort ?? 0;
      if (!takesSshPort('tcp', r.hostIP ? [r.hostIP] : ['127.0.0.1'], hostPort, hostSshPort)) return;
      ctx.addIssue({
        code: 'custom',
        path: ['portForwards', i, r.hostPort !== undefined ? 'hostPort' : 'guestPort'],
        message: `expected another host port: ${sshPortTaken(hostPort)}`,
      });
    });
    staticClashes(c.portForwards, ctx);
    // Two mounts on one guest directory stack: the second hides the first, and both would show `mounted`.
    const seen = new Map<string, number>();
    (c.mounts ?? []).forEach((m, i) => {
      const key = mountPointKey(m);
      const first = seen.get(key);
      if (first === undefined) {
        seen.set(key, i);
        return;
      }
      ctx.addIssue({
        code: 'custom',
        path: ['mounts', i, m.mountPoint === undefined ? 'location' : 'mountPoint'],
        message: `the same guest mount point as mounts[${first}]: a second mount there would hide the first; give each its own mountPoint`,
      });
    });
  });

/**
 * Two static rules on one host port and address, or two socket rules on one host socket: the second could never
 * listen, and would sit in `conflict` or `error` for as long as the agent runs.
 */
function staticClashes(rules: readonly z.infer<typeof PortForward>[], ctx: z.RefinementCtx): void {
  const sockets = new Map<string, number>();
  const ports: { ip: string; port: number; index: number }[] = [];
  const clash = (i: number, key: string, what: string, first: number) =>
    ctx.addIssue({
      code: 'custom',
      path: ['portForwards', i, key],
      message: `a ${what} of its own: portForwards[${first}] has this one, and the second could never listen there`,
    });
  // The same address, or the wildcard of its family and any address of that family.
  const overlaps = (a: string, b: string) =>
    a === b ||
    (a.includes(':') === b.includes(':') && (a === '0.0.0.0' || a === '::' || b === '0.0.0.0' || b === '::'));
  rules.forEach((r, i) => {
    if ('guestSocket' in r) {
      const socket = r.hostSocket ?? posix.basename(r.guestSocket);
      const first = sockets.get(socket);
      if (first === undefined) sockets.set(socket, i);
      else if (r.hostSocket) clash(i, 'hostSocket', 'host socket', first);
      else clash(i, 'hostSocket', `host socket (without hostSocket: ${socket} in the instance directory)`, first);
      return;
    }
    if (!r.static || r.ignore || r.guestPort === undefined) return;
    const port = r.hostPort ?? r.guestPort;
    const ips = r.hostIP === undefined ? ['127.0.0.1', '::1'] : [r.hostIP];
    const first = ports.find((p) => p.port === port && ips.some((ip) => overlaps(ip, p.ip)));
    if (first) clash(i, r.hostPort !== undefined ? 'hostPort' : 'guestPort', 'host port', first.index);
    else for (const ip of ips) ports.push({ ip, port, index: i });
  });
}

/**
 * A mount's guest directory as written, for comparing mounts: its mountPoint, else its location (the same path in the
 * guest; a `~` there is the host's home, not the guest user's, so it is kept apart from a mountPoint's `~`).
 */
function mountPointKey(m: { location: string; mountPoint?: string }): string {
  const dir = (p: string) => posix.normalize(p).replace(/(.)\/+$/, '$1');
  if (m.mountPoint !== undefined) return dir(m.mountPoint);
  return m.location.startsWith('~') ? `host:${dir(m.location)}` : dir(m.location);
}

export type SshConfig = z.infer<typeof SshConfig>;
export type GuestAgentConfig = z.infer<typeof GuestAgentConfig>;
export type PortRule = z.infer<typeof PortRule>;
export type SocketRule = z.infer<typeof SocketRule>;
export type PortForward = z.infer<typeof PortForward>;
export type MountConfig = z.infer<typeof MountConfig>;
export type Config = z.infer<typeof Config>;

export function isSocketRule(r: PortForward): r is SocketRule {
  return 'guestSocket' in r;
}
