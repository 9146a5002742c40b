// The gRPC bench's service: one unary method, `/shop.Orders/Get`, with raw Buffer messages (identity
// serializers, no protobuf), shared by the bench app and the load generator.
import type * as grpc from '@grpc/grpc-js';

const id = (b: Buffer) => b;

/** The method the bench calls, and the path the sidecar's policy allows. */
export const GET_PATH = '/shop.Orders/Get';

export const ORDERS_SERVICE = {
  get: {
    path: GET_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: id,
    requestDeserialize: id,
    responseSerialize: id,
    responseDeserialize: id,
  },
} as unknown as grpc.ServiceDefinition;
