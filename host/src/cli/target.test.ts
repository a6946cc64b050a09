import { userInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { parseSshTarget } from './target.js';

describe('--ssh [USER@]HOST[:PORT]', () => {
  it('gives what is left out ssh’s defaults, so a new target never keeps parts of the old one', () => {
    expect(parseSshTarget('vm2')).toEqual({ user: userInfo().username, host: 'vm2', port: 22 });
    expect(parseSshTarget('dev@[::1]:2222')).toEqual({ user: 'dev', host: '::1', port: 2222 });
  });

  it('refuses what is not a target, naming the form', () => {
    expect(() => parseSshTarget('a@b:99999')).toThrow('--ssh a@b:99999: port 99999 is not a port (1-65535)');
    expect(() => parseSshTarget('dev@::1')).toThrow(
      /; put an IPv6 address in brackets, a port after them: dev@\[::1\] or dev@\[::1\]:22$/,
    );
    expect(() => parseSshTarget('a b')).toThrow(/expected \[USER@\]HOST\[:PORT\]/);
  });
});
