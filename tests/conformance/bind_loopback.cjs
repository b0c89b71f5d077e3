// Used by tests/conformance/test_conformance.py: the suite's mock servers must listen on
// 127.0.0.1 only, and it has no option for that.
// Preload (node --require): a server that listens on a port without naming a host binds
// 127.0.0.1 instead of every interface. The conformance mocks call listen(0) and read
// address().port synchronously, so the socket is bound here synchronously (a TCP handle
// bound to 127.0.0.1, handed to listen) rather than by passing a host, which Node resolves
// asynchronously.
'use strict';
const net = require('net');
const { TCP, constants } = process.binding('tcp_wrap');
const original = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  // Under load (a whole requirement set runs in parallel) an idle keep-alive socket can be
  // closed by the mock just as the client reuses it; keep idle sockets open longer.
  if (typeof this.keepAliveTimeout === 'number') this.keepAliveTimeout = 60000;
  let port, rest;
  const first = args[0];
  if (typeof first === 'number' && typeof args[1] !== 'string') {
    port = first; rest = args.slice(1);
  } else if (first === undefined || typeof first === 'function') {
    port = 0; rest = args;
  } else if (first && typeof first === 'object' && first.constructor === Object &&
             first.host === undefined && first.path === undefined && first.fd === undefined && first.handle === undefined) {
    port = first.port ?? 0; rest = args.slice(1);
  } else {
    return original.apply(this, args);
  }
  const handle = new TCP(constants.SERVER);
  const err = handle.bind('127.0.0.1', Number(port));
  if (err) { handle.close(); return original.apply(this, [port, '127.0.0.1', ...rest]); }
  const cb = rest.find((a) => typeof a === 'function');
  return cb ? original.call(this, handle, cb) : original.call(this, handle);
};
