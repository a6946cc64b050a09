// Public surface of tether's builtin SFTP v3 server and of the marker-touch filter put in front of OpenSSH's
// sftp-server; mount/ wires them to an exec channel.

export { ChangeTap } from './change-tap.js';
export { markerFilter } from './marker-filter.js';
export { type ChangeListener, serveSftp } from './server.js';
