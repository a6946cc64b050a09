// The built CLI against a running agent whose views carry terminal control sequences, as a hostile or broken guest
// can make them (hostname, versions, listen-event detail, a process's command line, error text): the real control
// server on the instance's ha.sock, an AgentApi standing in for the agent. No command may write a control character
// other than newline and tab, and `--json` must still give the guest's strings unchanged.
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Config } from '../host/src/config/schema.js';
import { type ControlServer, startControlServer } from '../host/src/control/server.js';
import { instancePaths } from '../host/src/instance.js';
import { silentLogger } from '../host/src/log.js';
import { logFileName } from '../host/src/log-names.js';
import type { AgentApi, ForwardView, MountView, StatusView } from '../host/src/model.js';
import { cliBuilt, runCli } from './helpers/cli-helpers.js';

const NAME = 'hostile';
// OSC retitle, clear screen, red background, and the single-byte C1 CSI.
// A right-to-left override too, which reorders what follows it on the screen.
const EVIL = '\x1b]0;PWNED\x07\x1b[2J\x1b[41mEVIL\u009b2J\u202egnp.exe';
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point
const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

const now = new Date().toISOString();

const forward: ForwardView = {
  id: 'tcp/127.0.0.1:8080',
  proto: 'tcp',
  guestAddr: '127.0.0.1:8080',
  hostAddrs: ['127.0.0.1:8080'],
  state: 'error',
  process: { pid: 7, command: `python3 ${EVIL}` },
  connections: 0,
  bytesIn: 0,
  bytesOut: 0,
  since: now,
  error: `guest said ${EVIL}`,
  heldBy: null,
  cause: null,
  source: 'detected',
};

const mount: MountView = {
  location: `/home/me/${EVIL}`,
  mountPoint: '~',
  guestPath: '/home/me',
  driver: 'builtin',
  writable: true,
  state: 'error',
  inotify: 'off',
  since: now,
  error: `sshfs: ${EVIL}`,
  cause: null,
};

const status: StatusView = {
  name: NAME,
  pid: process.pid,
  startedAt: now,
  build: null,
  state: 'degraded',
  ssh: { target: 'me@127.0.0.1:2222', state: 'connected', since: now, lastError: null, reconnects: 0 },
  guest: {
    version: EVIL,
    build: EVIL,
    hostname: EVIL,
    kernel: EVIL,
    arch: EVIL,
    scanIntervalMs: 100,
    listenEvents: { on: false, detail: EVIL },
    agentPid: 7,
    agentStartedAt: now,
    listeners: 1,
  },
  link: {
    up: true,
    lastError: EVIL,
    outdated: EVIL,
    socket: '/run/tether/agent.sock',
    guestStopping: null,
    provisioning: false,
    provisionStep: null,
    provisionError: EVIL,
    restartAt: null,
  },
  requirements: [
    { index: 4, total: 5, name: 'guest agent running', state: 'ok', detail: `tether-guest ${EVIL}`, elapsedMs: 1 },
  ],
  forwards: { forwarding: 0, conflict: 0, privileged: 0, ignored: 0, suspended: 0, error: 1, total: 1, capped: 0 },
  mounts: { pending: 0, mounting: 0, mounted: 0, suspended: 0, error: 1, unmounted: 0, total: 1 },
  mountStates: [mount],
  stopReason: null,
  lastErrors: [{ time: now, component: 'link', msg: `guest: ${EVIL}`, resolvedAt: null }],
  logFile: '/tmp/current.log',
};

/** Whether `value` holds a string that contains `needle`. */
function holds(value: unknown, needle: string): boolean {
  if (typeof value === 'string') return value.includes(needle);
  if (value !== null && typeof value === 'object') return Object.values(value).some((v) => holds(v, needle));
  return false;
}

class HostileViews extends EventEmitter implements AgentApi {
  readonly name = NAME;
  readonly config = Config.parse({ ssh: { user: 'me' } });
  status(): StatusView {
    return status;
  }
  forwards(): ForwardView[] {
    return [forward];
  }
  mounts(): MountView[] {
    return [mount];
  }
  async addForward(): Promise<ForwardView> {
    return forward;
  }
  async removeForward(): Promise<void> {}
  async stop(): Promise<void> {}
}

describe.skipIf(!cliBuilt())('CLI output of strings that carry terminal controls', () => {
  let home: string;
  let server: ControlServer;

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'tether-cli-terminal-'));
    const paths = instancePaths(NAME, home);
    mkdirSync(paths.logs, { recursive: true });
    writeFileSync(paths.config, 'ssh:\n  host: 127.0.0.1\n  port: 2222\n  user: me\n');
    const line = { level: 50, time: Date.now(), component: 'link', msg: EVIL };
    writeFileSync(join(paths.logs, logFileName(1)), `${JSON.stringify(line)}\n`);
    symlinkSync(logFileName(1), paths.currentLog);
    server = await startControlServer({ socketPath: paths.socket, agent: new HostileViews(), log: silentLogger() });
  });

  afterAll(async () => {
    await server?.close();
    rmSync(home, { recursive: true, force: true });
  });

  it.each([['status', NAME], ['forward', 'ls', NAME], ['mount', 'ls', NAME], ['logs', NAME], ['ls']])(
    'tether %s writes no control characters',
    async (...args) => {
      const r = await runCli(home, args);
      expect(r.stdout.length).toBeGreaterThan(0);
      expect(r.stdout).not.toMatch(RAW_CONTROL);
      expect(r.stderr).not.toMatch(RAW_CONTROL);
    },
  );

  it.each([
    ['status', NAME],
    ['forward', 'ls', NAME],
    ['mount', 'ls', NAME],
  ])('tether %s shows where a control character was, escaped', async (...args) => {
    const r = await runCli(home, args);
    expect(r.stdout).toContain('\\x1b]0;PWNED\\x07');
  });

  it.each([
    ['status', NAME, '--json'],
    ['forward', 'ls', NAME, '--json'],
    ['mount', 'ls', NAME, '--json'],
    ['logs', NAME, '--json'],
  ])('tether %s %s %s keeps the strings as they are, escaped the JSON way', async (...args) => {
    const r = await runCli(home, args);
    expect(r.stdout).not.toMatch(RAW_CONTROL);
    const docs = args[0] === 'logs' ? r.stdout.trim().split('\n') : [r.stdout];
    expect(docs.some((d) => holds(JSON.parse(d), EVIL))).toBe(true);
  });
});
