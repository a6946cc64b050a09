import { describe, expect, it } from 'vitest';
import type { SftpLogger } from './server.js';
import { HostTrouble } from './trouble.js';

function recorder() {
  const warnings: { obj: object; msg: string }[] = [];
  const log: SftpLogger = { debug() {}, info() {}, error() {}, warn: (obj, msg) => warnings.push({ obj, msg }) };
  return { log, warnings };
}

const errno = (code: string, message: string, hostPath?: string) =>
  Object.assign(new Error(message), { code }, hostPath === undefined ? {} : { hostPath });

describe('HostTrouble', () => {
  it('logs a full disk with the request and path, once a minute per kind, counting the rest', () => {
    const { log, warnings } = recorder();
    let now = 1_000;
    const trouble = new HostTrouble(log, () => now);
    trouble.note('write', errno('ENOSPC', 'ENOSPC: no space left on device, write', '/home/me/big.bin'));
    trouble.note('write', errno('ENOSPC', 'ENOSPC: no space left on device, write', '/home/me/big.bin'));
    trouble.note('close', errno('EIO', 'EIO: i/o error, close', '/home/me/other'));
    expect(warnings.map((w) => w.msg)).toEqual([
      'sftp write of /home/me/big.bin failed on the host: ENOSPC: no space left on device, write',
      'sftp close of /home/me/other failed on the host: EIO: i/o error, close',
    ]);
    expect(warnings[0].obj).toEqual({ op: 'write', errno: 'ENOSPC', path: '/home/me/big.bin' });
    now += 61_000;
    trouble.note('write', errno('ENOSPC', 'ENOSPC: no space left on device, write', '/home/me/big.bin'));
    expect(warnings.at(-1)?.msg).toMatch(/ENOSPC.*\(1 more like it in the last minute\)$/);
  });

  it("leaves the guest's own failures (no such file, permission denied) and non-errno errors alone", () => {
    const { log, warnings } = recorder();
    const trouble = new HostTrouble(log);
    trouble.note('open', errno('ENOENT', 'ENOENT: no such file or directory'));
    trouble.note('open', errno('EACCES', 'EACCES: permission denied'));
    trouble.note('open', new Error('rename target already exists'));
    trouble.note('open', undefined);
    expect(warnings).toEqual([]);
  });

  it('shows a host path that is not UTF-8 readably', () => {
    const { log, warnings } = recorder();
    new HostTrouble(log).note(
      'write',
      errno('EDQUOT', 'EDQUOT: quota', Buffer.from('/h/caf\xe9', 'latin1').toString('latin1')),
    );
    expect(warnings[0].msg).toContain('/h/caf');
  });
});
