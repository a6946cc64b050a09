// The real QEMU VM for end-to-end tests, driven through scripts/vm/: builds (or reuses) the cached Debian image,
// boots a throw-away copy (-snapshot) from its own state directory on a free loopback port, runs commands in it over
// ssh as the sudo user, reboots it from inside and stops it. Owns that state directory and the QEMU process it
// started; the image cache is shared and only ever read after the build.
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPTS = fileURLToPath(new URL('../../scripts/vm/', import.meta.url));
/** Files start.sh boots from: shared read-only with the cache (QEMU's -snapshot never writes them). */
const IMAGE_FILES = ['rootfs.ext4', 'vmlinuz', 'initrd.img'];
/** Files each VM gets its own copy of (ssh insists on a private key file it can check the mode of). */
const KEY_FILES = ['id_ed25519', 'id_ed25519.pub', 'known_hosts'];

export const VM_USER = 'tether';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Where the image is cached: $TETHER_VM_STATE, else ~/.cache/tether-vm (the scripts' own default). */
export function imageCacheDir(): string {
  return process.env.TETHER_VM_STATE || join(homedir(), '.cache', 'tether-vm');
}

/** Why the VM cannot run here, or null. */
export function vmUnavailable(): string | null {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'the test VM is x86_64 Linux under QEMU';
  if (process.getuid?.() !== 0) return 'building the VM image needs root (mmdebstrap, chroot, mkfs.ext4 -d)';
  return null;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        const why = err && code === -1 ? `\n(${file} ${args.join(' ')}: ${err.message})` : '';
        resolve({ code, stdout, stderr: stderr + why });
      },
    );
  });
}

function script(name: string): string {
  return join(SCRIPTS, name);
}

/** build-image.sh into the cache: a no-op when the recipe is unchanged. Throws with the script's output tail. */
export async function buildImage(cacheDir = imageCacheDir(), timeoutMs = 30 * 60_000): Promise<void> {
  const r = await run(script('build-image.sh'), [cacheDir], {}, timeoutMs);
  if (r.code !== 0) throw new Error(`build-image.sh ${cacheDir} failed (exit ${r.code}): ${tail(r.stderr)}`);
}

function tail(s: string, lines = 30): string {
  return s.trim().split('\n').slice(-lines).join('\n');
}

export class QemuVm {
  /** This VM's own state directory (qemu.pid, qmp.sock, serial.log, ssh.port, the client key). */
  readonly stateDir: string;
  readonly identityFile: string;

  private constructor(
    stateDir: string,
    readonly sshPort: number,
  ) {
    this.stateDir = stateDir;
    this.identityFile = join(stateDir, 'id_ed25519');
  }

  /** A fresh state directory over the cached image, booted with start.sh; resolves once ssh logs in. */
  static async start(sshPort: number, cacheDir = imageCacheDir(), bootTimeoutS = 600): Promise<QemuVm> {
    const stateDir = mkdtempSync(join(tmpdir(), 'tether-vm-run-'));
    for (const f of IMAGE_FILES) symlinkSync(join(cacheDir, f), join(stateDir, f));
    for (const f of KEY_FILES) copyFileSync(join(cacheDir, f), join(stateDir, f));
    const vm = new QemuVm(stateDir, sshPort);
    const r = await run(
      script('start.sh'),
      [stateDir, String(sshPort)],
      { VM_BOOT_TIMEOUT: String(bootTimeoutS) },
      (bootTimeoutS + 60) * 1000,
    );
    if (r.code !== 0) {
      await vm.stop();
      throw new Error(`start.sh ${stateDir} ${sshPort} failed (exit ${r.code}): ${tail(r.stderr)}`);
    }
    return vm;
  }

  /** Runs a shell command in the guest as the sudo user (ssh.sh: pinned host key, BatchMode). */
  ssh(command: string, timeoutMs = 60_000): Promise<RunResult> {
    return run(script('ssh.sh'), [command], { TETHER_VM_STATE: this.stateDir }, timeoutMs);
  }

  /** Like ssh() but throws unless the command exits 0; returns its trimmed stdout. */
  async sshOk(command: string, timeoutMs?: number): Promise<string> {
    const r = await this.ssh(command, timeoutMs);
    if (r.code !== 0) throw new Error(`guest command failed (exit ${r.code}): ${command}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  /** The guest's boot id (changes with every boot), or null while ssh does not answer. */
  async bootId(): Promise<string | null> {
    const r = await this.ssh('cat /proc/sys/kernel/random/boot_id', 20_000);
    return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : null;
  }

  /** Asks the guest to reboot; the ssh session may be cut by the reboot itself, so its outcome is not judged. */
  async requestReboot(): Promise<void> {
    await this.ssh('sudo -n systemctl reboot', 30_000);
  }

  /** The last lines of the guest's serial console, for failure messages. */
  serialTail(lines = 40): string {
    const file = join(this.stateDir, 'serial.log');
    return existsSync(file) ? tail(readFileSync(file, 'utf8'), lines) : '(no serial log)';
  }

  /** stop.sh (QMP quit, then signals to the recorded QEMU pid only), then removes the state directory. */
  async stop(): Promise<void> {
    const r = await run(script('stop.sh'), [this.stateDir], {}, 60_000);
    if (r.code !== 0) throw new Error(`stop.sh ${this.stateDir} failed (exit ${r.code}): ${tail(r.stderr)}`);
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}
