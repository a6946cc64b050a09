// Who may talk to tether's sockets: the control socket (ha.sock, 0600 in a 0700 instance directory) serves only its
// owner, and the guest agent socket (`tether-guest run --socket-owner USER`, 0600) only root and that user. Another
// user (`nobody`, uid 65534, no groups) is refused with EACCES at each layer on its own, so loosening one layer by
// mistake still keeps them out.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AgentProcess, startAgentProcess } from '../host/src/cli/agent-process.js';
import type { LoadedConfig } from '../host/src/config/load.js';
import { ensureInstanceDir, type InstancePaths, instancePaths } from '../host/src/instance.js';
import { testConfig } from './helpers/forward-fixture.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';
import { waitFor } from './helpers/wait.js';

const execFileAsync = promisify(execFile);
const GUEST_BUNDLE = fileURLToPath(new URL('../build/guest/tether-guest.cjs', import.meta.url));
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--'];

/** Prints CONNECTED or the error code of connecting to the unix socket argv[1]. */
const CONNECT_PROBE =
  "const s=require('net').connect(process.argv[1]);" +
  "s.on('connect',()=>{console.log('CONNECTED');s.destroy()});s.on('error',(e)=>console.log(e.code))";
/** Prints READ or the error code of listing the directory (or reading the file) argv[1]. */
const READ_PROBE =
  "const fs=require('fs'),p=process.argv[1];" +
  "try{fs.statSync(p).isDirectory()?fs.readdirSync(p):fs.readFileSync(p);console.log('READ')}catch(e){console.log(e.code)}";

/** Runs a probe on the host as `nobody`; resolves with what it printed. */
async function asNobody(probe: string, path: string): Promise<string> {
  const [cmd, ...args] = NOBODY;
  const { stdout } = await execFileAsync(cmd, [...args, process.execPath, '-e', probe, path]);
  return stdout.trim();
}

function httpStatus(socketPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/v1/status' }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe.skipIf(!canRunTestbed())('socket and instance directory permissions', () => {
  const testbed = useTestbed();
  let tb: Testbed;
  let scratch: string;
  let guestSocket: string;
  let paths: InstancePaths;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    tb = testbed();
    // World-traversable parents, so every refusal below comes from tether's own modes.
    scratch = mkdtempSync(join(tmpdir(), 'tether-perm-'));
    chmodSync(scratch, 0o755);
    guestSocket = join(scratch, 'run', 'agent.sock');
    const guest = tb.spawn('node', [GUEST_BUNDLE, 'run', '--socket', guestSocket, '--socket-owner', tb.user]);
    let out = '';
    guest.stdout!.on('data', (d: Buffer) => {
      out += d;
    });
    guest.stderr!.on('data', (d: Buffer) => {
      out += d;
    });
    await waitFor(
      async () => {
        if (guest.exitCode !== null) throw new Error(`tether-guest exited: ${out}`);
        return (await tb.exec(`node -e "${CONNECT_PROBE}" ${guestSocket}`)).stdout.includes('CONNECTED');
      },
      { what: `tether-guest serving ${guestSocket}` },
    );

    const home = join(scratch, 'tether-home');
    paths = instancePaths('perm', home);
    ensureInstanceDir(paths);
    chmodSync(home, 0o755);
    const config = testConfig(tb, {
      guestAgent: { socket: guestSocket, provision: 'never' },
      mounts: [],
    }) as LoadedConfig;
    agent = await startAgentProcess(paths, config, { signals: false });
    await agent.ready;
  });

  afterAll(async () => {
    await agent?.stop('test finished');
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('creates ha.sock 0600 inside a 0700 instance directory, and its owner is served', async () => {
    expect(statSync(paths.dir).mode & 0o777).toBe(0o700);
    expect(statSync(paths.socket).mode & 0o777).toBe(0o600);
    expect(statSync(paths.socket).uid).toBe(process.getuid!());
    expect(await httpStatus(paths.socket)).toBe(200);
  });

  it('keeps another user out of the instance directory: no connect, no listing, no logs, no pinned key', async () => {
    expect(await asNobody(CONNECT_PROBE, paths.socket)).toBe('EACCES');
    expect(await asNobody(READ_PROBE, paths.dir)).toBe('EACCES');
    expect(await asNobody(READ_PROBE, paths.currentLog)).toBe('EACCES');
    expect(await asNobody(READ_PROBE, paths.hostKey)).toBe('EACCES');
  });

  it('refuses another user at ha.sock itself even when the directory is opened up', async () => {
    chmodSync(paths.dir, 0o755);
    try {
      expect(await asNobody(CONNECT_PROBE, paths.socket)).toBe('EACCES');
      expect(await asNobody(READ_PROBE, paths.pidFile)).toBe('EACCES'); // ha.pid is 0600 too
      expect(await asNobody(READ_PROBE, paths.hostKey)).toBe('EACCES');
      // The control case: with the socket's mode loosened too, the same probe as nobody gets through.
      chmodSync(paths.socket, 0o666);
      expect(await asNobody(CONNECT_PROBE, paths.socket)).toBe('CONNECTED');
    } finally {
      chmodSync(paths.socket, 0o600);
      chmodSync(paths.dir, 0o700);
    }
    expect(await httpStatus(paths.socket)).toBe(200);
  });

  it('makes the guest agent socket 0600 owned by the socket owner: the owner connects, nobody cannot', async () => {
    const st = statSync(guestSocket);
    expect(st.mode & 0o777).toBe(0o600);
    const { stdout: uid } = await tb.exec(`id -u ${tb.user}`);
    expect(st.uid).toBe(Number(uid.trim()));
    expect(statSync(join(scratch, 'run')).mode & 0o777).toBe(0o711); // traversable, not listable
    const probe = `node -e "${CONNECT_PROBE}" ${guestSocket}`;
    expect((await tb.exec(probe, { user: tb.user })).stdout.trim()).toBe('CONNECTED');
    expect((await tb.exec(`${NOBODY.join(' ')} ${probe}`)).stdout.trim()).toBe('EACCES');
    expect((await tb.exec(`${NOBODY.join(' ')} node -e "${READ_PROBE}" ${join(scratch, 'run')}`)).stdout.trim()).toBe(
      'EACCES',
    );
    // The host agent reached it as that user through sshd.
    expect(agent!.agent.status().guest?.agentPid).toBeGreaterThan(0);
  });
});
