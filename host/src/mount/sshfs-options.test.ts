import { describe, expect, it } from 'vitest';
import { MountConfig } from '../config/schema.js';
import { shellQuote } from '../ssh/shell-quote.js';
import { mountPointOf, sshfsCommand } from './sshfs-options.js';

describe('sshfs command', () => {
  it('puts user extras after tether options so they win', () => {
    const m = MountConfig.parse({ location: '/Users/me', sshfs: ['dcache_timeout=60'] });
    const options = /exec sshfs -f -o (\S+) /.exec(sshfsCommand(m, '/Users/me', 'true'))?.[1];
    expect(options).toBe('slave,allow_other,idmap=user,dcache_timeout=2"$x",dcache_timeout=60');
  });
  it('mounts at the location unless a mount point is configured', () => {
    expect(mountPointOf(MountConfig.parse({ location: '/a' }))).toBe('/a');
    expect(mountPointOf(MountConfig.parse({ location: '/a', mountPoint: '/b' }))).toBe('/b');
  });
  it('quotes paths with shell metacharacters and prints the start marker right before exec', () => {
    const config = MountConfig.parse({ location: "/tmp/it's $HOME", mountPoint: '/mnt/x y' });
    const cmd = sshfsCommand(config, '/var/mnt/x y', 'printf MARK');
    expect(cmd).toContain(`':/tmp/it'\\''s $HOME/'`);
    expect(cmd).toMatch(
      /^x=\$\(.+\) && mkdir -p '\/var\/mnt\/x y' && printf MARK && exec sshfs -f -o .+ '\/var\/mnt\/x y'$/,
    );
    expect(shellQuote('plain/path-1.txt')).toBe('plain/path-1.txt');
  });
  it('clears a stale mount in the same command, right before the mount point is made', () => {
    const config = MountConfig.parse({ location: '/a' });
    const cmd = sshfsCommand(config, "/m n't", 'true', { unmountFirst: 'fusermount3 -uz x' });
    expect(cmd).toMatch(
      /^x=\$\(.+\) && \{ fusermount3 -uz x \|\| \{ echo cannot clear the stale sshfs mount at '\/m n'\\''t' >&2; exit 1; \}; \} && mkdir -p /,
    );
  });
  it('adds no_contain_symlinks where sshfs has it, before the user extras', () => {
    const config = MountConfig.parse({ location: '/a', sshfs: ['contain_symlinks'] });
    const cmd = sshfsCommand(config, '/a', 'true');
    expect(cmd).toContain('x=$(sshfs -h 2>&1 | grep -qw no_contain_symlinks && echo ,no_contain_symlinks || true)');
    expect(cmd).toContain('dcache_timeout=2"$x",contain_symlinks :/a/');
  });
});
