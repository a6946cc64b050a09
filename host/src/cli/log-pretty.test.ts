import { describe, expect, it } from 'vitest';
import { prettyRecord } from './log-pretty.js';

describe('prettyRecord', () => {
  it('leaves out the fields the message already says, and keeps the rest', () => {
    const record = {
      level: 30,
      time: 1,
      component: 'forward',
      msg: 'forward tcp guest 127.0.0.1:8081 → host 127.0.0.1:8081, [::1]:8081: forwarding',
      forward: 'tcp/127.0.0.1:8081',
      state: 'forwarding',
      guest: '127.0.0.1:8081',
      host: ['127.0.0.1:8081', '[::1]:8081'],
      error: null,
      listeners: 3,
      socket: '/run/other.sock',
    };
    expect(prettyRecord(record)).toEqual({
      level: 30,
      time: 1,
      component: 'forward',
      msg: record.msg,
      forward: 'tcp/127.0.0.1:8081',
      listeners: 3,
      socket: '/run/other.sock',
    });
  });

  it('drops an error the line quotes, keeps one it does not, and puts the message on one line', () => {
    const quoted = { msg: 'sshfs channel error: read ECONNRESET', err: { message: 'read ECONNRESET', stack: 'x' } };
    expect(prettyRecord(quoted)).toEqual({ msg: quoted.msg });
    const other = { msg: 'agent link loop failed', err: { message: 'boom' } };
    expect(prettyRecord(other)).toEqual(other);
    expect(prettyRecord({ msg: 'a\nERROR: forged\r\nline' })).toEqual({ msg: 'a ERROR: forged line' });
  });
});
