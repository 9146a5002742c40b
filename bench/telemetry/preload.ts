// Loaded with `node --import` into the benchmark's sidecar process to turn tracing on (OTLP to the
// endpoint in OTEL_EXPORTER_OTLP_ENDPOINT) before the sidecar starts. Prints nothing on stdout:
// the sidecar process reports its port there.
import { startTelemetry } from '../../core/index.ts';

const telemetry = await startTelemetry({ serviceName: 'portcullis-bench-sidecar' });
if (!telemetry.enabled) {
  console.error('bench/telemetry/preload.ts: OTEL_EXPORTER_OTLP_ENDPOINT is not set; tracing stays off');
  process.exit(2);
}
