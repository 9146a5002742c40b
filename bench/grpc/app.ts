// The gRPC bench's app: a @grpc/grpc-js server (plaintext HTTP/2, as an app behind a sidecar or
// nginx `grpc_pass` is) answering `/shop.Orders/Get` with a small fixed-size reply built from the
// request. Prints `{"port":N}` once listening; stops on SIGTERM.
import * as grpc from '@grpc/grpc-js';
import { ORDERS_SERVICE } from './service.ts';

const server = new grpc.Server();
const reply = Buffer.alloc(128, 'o');
server.addService(ORDERS_SERVICE, {
  get: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
    // The reply depends on the request, so a proxy that garbled it would be noticed by the client.
    const out = Buffer.from(reply);
    call.request.copy(out, 0, 0, Math.min(16, call.request.length));
    cb(null, out);
  },
});
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`bench gRPC app: cannot listen: ${err.message}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ port }));
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
