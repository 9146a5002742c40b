// The gRPC bench's load generator in Go (`--client go`): the same calls, options and JSON output
// as loadgen.ts, without a JavaScript heap. At 3,000–4,000 calls/s the Node load generator's own
// garbage collection (node:http2 streams are promoted and reclaimed only by full collections)
// stalls it 20–50 ms at a time; every stall sends the calls that fell due meanwhile in one burst,
// so the open loop's tail measured the generator and the burst, not the targets. Go's collector
// stops the world for well under a millisecond, and each call runs on its own goroutine, so the
// calls leave on schedule.
//
// Unary calls to one path: a length-prefixed 22-byte message in a POST with `content-type:
// application/grpc` and `te: trailers`; the reply (one 128-byte message whose first 16 bytes echo
// the request's) and `grpc-status` (trailers, or the head of a trailers-only answer) are checked.
// Targets with TLS use a workload certificate and check the server's chain against the CA (the
// certificates name SPIFFE IDs, not host names); without, HTTP/2 with prior knowledge (h2c).
//
// Usage: loadgen '<json options>' (the fields of loadgen.ts' Options); prints one JSON line.
// LOADGEN_DUMP=<dir> also writes each target's measured latencies (ns, one per line) to
// <dir>/<name>.lat. `loadgen serve` is the bench's app instead (see serve).
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

type targetOptions struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	TLS    *struct {
		CertFile string `json:"certFile"`
		KeyFile  string `json:"keyFile"`
		CAFile   string `json:"caFile"`
	} `json:"tls"`
	Token string `json:"token"`
}

type options struct {
	Targets     []targetOptions `json:"targets"`
	SliceMs     *float64        `json:"sliceMs"`
	Mode        string          `json:"mode"`
	Concurrency int             `json:"concurrency"`
	Rate        float64         `json:"rate"`
	DurationMs  float64         `json:"durationMs"`
	WarmupMs    float64         `json:"warmupMs"`
	Connections int             `json:"connections"`
	Path        string          `json:"path"`
}

type load struct {
	name    string
	conns   []*http2.ClientConn
	token   string
	scheme  string
	host    string
	calls   atomic.Uint64
	mu      sync.Mutex
	lat     []int64
	ok      int
	errs    int
	status  int
	bad     int
	sent    int
	reasons map[string]int
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "gRPC loadgen (go): "+format+"\n", a...)
	os.Exit(2)
}

func dial(t targetOptions, n int) *load {
	l := &load{name: t.Name, token: t.Token, host: "orders", reasons: map[string]int{}}
	// A call past the server's stream limit waits for a free stream, as grpc-go does.
	tr := &http2.Transport{StrictMaxConcurrentStreams: true}
	var cfg *tls.Config
	if t.TLS != nil {
		cert, err := tls.LoadX509KeyPair(t.TLS.CertFile, t.TLS.KeyFile)
		if err != nil {
			fail("%s: %v", t.Name, err)
		}
		pem, err := os.ReadFile(t.TLS.CAFile)
		if err != nil {
			fail("%s: %v", t.Name, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			fail("%s: no certificate in %s", t.Name, t.TLS.CAFile)
		}
		cfg = &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2"},
			MinVersion:   tls.VersionTLS13,
			ServerName:   "orders",
			// The chain is checked against the CA below; the workload certificates name SPIFFE
			// IDs (URI SANs), not host names, so the name check is the only one skipped.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 {
					return errors.New("no server certificate")
				}
				leaf, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				inter := x509.NewCertPool()
				for _, r := range raw[1:] {
					if c, err := x509.ParseCertificate(r); err == nil {
						inter.AddCert(c)
					}
				}
				_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
				return err
			},
		}
		l.scheme = "https"
	} else {
		l.scheme = "http"
	}
	for i := 0; i < n; i++ {
		raw, err := net.Dial("tcp", t.Target)
		if err != nil {
			fail("%s: %v", t.Name, err)
		}
		raw.(*net.TCPConn).SetNoDelay(true)
		conn := raw
		if cfg != nil {
			tc := tls.Client(raw, cfg)
			if err := tc.Handshake(); err != nil {
				fail("%s: TLS handshake: %v", t.Name, err)
			}
			if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
				fail("%s: ALPN gave %q, not h2", t.Name, p)
			}
			conn = tc
		}
		cc, err := tr.NewClientConn(conn)
		if err != nil {
			fail("%s: %v", t.Name, err)
		}
		l.conns = append(l.conns, cc)
	}
	l.host = t.Target
	return l
}

// call makes one unary call; returns "" when the reply is right, else why not (and whether the
// failure is the transport's).
func (l *load) call(path string, n uint64) (string, bool) {
	req := []byte(fmt.Sprintf("order-%010d", n))
	frame := make([]byte, 5+len(req))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(req)))
	copy(frame[5:], req)
	r, _ := http.NewRequest("POST", l.scheme+"://"+l.host+path, bytes.NewReader(frame))
	r.Host = "orders"
	r.Header.Set("content-type", "application/grpc")
	r.Header.Set("te", "trailers")
	if l.token != "" {
		r.Header.Set("authorization", "Bearer "+l.token)
	}
	r.ContentLength = int64(len(frame))
	res, err := l.conns[n%uint64(len(l.conns))].RoundTrip(r)
	if err != nil {
		return "UNAVAILABLE: " + err.Error(), true
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return "UNAVAILABLE: " + err.Error(), true
	}
	status := res.Trailer.Get("grpc-status")
	message := res.Trailer.Get("grpc-message")
	if status == "" {
		status = res.Header.Get("grpc-status")
		message = res.Header.Get("grpc-message")
	}
	if status == "" {
		return fmt.Sprintf("UNAVAILABLE: HTTP %d without grpc-status", res.StatusCode), true
	}
	if status != "0" {
		return status + ": " + message, false
	}
	if len(body) != 5+128 || body[0] != 0 || binary.BigEndian.Uint32(body[1:]) != 128 ||
		!bytes.Equal(body[5:5+16], req[:16]) {
		return "bad reply", false
	}
	return "", false
}

// serve is the bench's app in Go (`--app go`): the grpc-js app's answer — a 128-byte reply whose
// first 16 bytes echo the request message, `grpc-status: 0` in trailers — over h2c, from a server
// whose own pauses stay under a millisecond, so that the tail left is the proxies'. A request that
// is not one uncompressed length-prefixed message gets `grpc-status: 13`.
func serve() {
	reply := bytes.Repeat([]byte{'o'}, 128)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		h := w.Header()
		h.Set("content-type", "application/grpc")
		h.Set("trailer", "grpc-status, grpc-message")
		if err != nil || len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:])) != len(body)-5 {
			w.WriteHeader(200)
			h.Set("grpc-status", "13")
			h.Set("grpc-message", "not one uncompressed gRPC message")
			return
		}
		out := make([]byte, 5+len(reply))
		binary.BigEndian.PutUint32(out[1:], uint32(len(reply)))
		copy(out[5:], reply)
		copy(out[5:], body[5:min(5+16, len(body))])
		w.WriteHeader(200)
		w.Write(out)
		h.Set("grpc-status", "0")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("{\"port\":%d}\n", ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: h2c.NewHandler(handler, &http2.Server{MaxConcurrentStreams: 1000})}
	fail("serve: %v", srv.Serve(ln))
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "serve" {
		serve()
	}
	if len(os.Args) != 2 {
		fail("usage: loadgen '<json options>' | loadgen serve")
	}
	var o options
	if err := json.Unmarshal([]byte(os.Args[1]), &o); err != nil {
		fail("options: %v", err)
	}
	if o.Path == "" {
		o.Path = "/shop.Orders/Get"
	}
	if o.Connections < 1 {
		o.Connections = 1
	}
	slice := time.Second
	if o.SliceMs != nil {
		slice = time.Duration(*o.SliceMs * float64(time.Millisecond))
	}
	loads := make([]*load, len(o.Targets))
	for i, t := range o.Targets {
		loads[i] = dial(t, o.Connections)
	}
	var measuring atomic.Bool
	var turn atomic.Uint64
	var seq atomic.Uint64
	origin := time.Now()
	current := func() *load {
		if slice == 0 {
			return loads[turn.Add(1)%uint64(len(loads))]
		}
		return loads[int(time.Since(origin)/slice)%len(loads)]
	}
	one := func(l *load) {
		n := seq.Add(1)
		on := measuring.Load()
		t0 := time.Now()
		why, transport := l.call(o.Path, n)
		d := time.Since(t0)
		if !on {
			return
		}
		l.mu.Lock()
		l.sent++
		switch {
		case why == "":
			l.ok++
			l.lat = append(l.lat, d.Nanoseconds())
		case why == "bad reply":
			l.bad++
		case transport:
			l.errs++
		default:
			l.status++
		}
		if why != "" {
			if len(why) > 120 {
				why = why[:120]
			}
			l.reasons[why]++
		}
		l.mu.Unlock()
	}
	// How late the open loop sent its calls (the Node generator's event-loop delay).
	var late []int64
	run := func(until time.Time) {
		if o.Mode == "closed" {
			var wg sync.WaitGroup
			for i := 0; i < o.Concurrency; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(until) {
						one(current())
					}
				}()
			}
			wg.Wait()
			return
		}
		per := o.Rate
		if slice == 0 {
			per *= float64(len(loads))
		}
		interval := time.Duration(float64(time.Second) / per)
		start := time.Now()
		var wg sync.WaitGroup
		for i := 0; ; i++ {
			due := start.Add(time.Duration(i) * interval)
			if !due.Before(until) {
				break
			}
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
			if measuring.Load() {
				late = append(late, time.Since(due).Nanoseconds())
			}
			wg.Add(1)
			l := current()
			go func() {
				defer wg.Done()
				one(l)
			}()
		}
		wg.Wait()
	}
	warm := time.Duration(o.WarmupMs * float64(time.Millisecond))
	if min := slice * time.Duration(len(loads)); warm < min {
		warm = min
	}
	run(time.Now().Add(warm))
	runtime.GC()
	var gc0 debug.GCStats
	debug.ReadGCStats(&gc0)
	measuring.Store(true)
	origin = time.Now()
	started := time.Now()
	run(time.Now().Add(time.Duration(o.DurationMs * float64(time.Millisecond))))
	measuring.Store(false)
	elapsed := time.Since(started).Seconds()
	if slice != 0 {
		elapsed /= float64(len(loads))
	}
	var gc1 debug.GCStats
	gc1.PauseQuantiles = make([]time.Duration, 101)
	debug.ReadGCStats(&gc1)
	for _, l := range loads {
		for _, c := range l.conns {
			c.Close()
		}
	}
	pct := func(xs []int64, p float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		i := int(float64(len(xs))*p/100+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(xs) {
			i = len(xs) - 1
		}
		return float64(xs[i]) / 1e6
	}
	round := func(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }
	out := map[string]any{}
	for _, l := range loads {
		if dir := os.Getenv("LOADGEN_DUMP"); dir != "" {
			f, _ := os.Create(dir + "/" + l.name + ".lat")
			for _, x := range l.lat {
				fmt.Fprintln(f, x)
			}
			f.Close()
		}
		sort.Slice(l.lat, func(i, j int) bool { return l.lat[i] < l.lat[j] })
		s := map[string]any{
			"ok": l.ok, "errors": l.errs, "statusErrors": l.status, "badReplies": l.bad, "sent": l.sent,
			"seconds": float64(int64(elapsed*100+0.5)) / 100,
			"rps":     int64(float64(l.ok)/elapsed + 0.5),
			"p50ms":   nil, "p99ms": nil, "maxms": nil,
		}
		if l.ok > 0 {
			s["p50ms"] = round(pct(l.lat, 50))
			s["p90ms"] = round(pct(l.lat, 90))
			s["p99ms"] = round(pct(l.lat, 99))
			s["p999ms"] = round(pct(l.lat, 99.9))
			s["maxms"] = round(pct(l.lat, 100))
		}
		if l.errs+l.status > 0 {
			s["statuses"] = l.reasons
		}
		out[l.name] = s
	}
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	var pauseMax time.Duration
	recent := int(gc1.NumGC - gc0.NumGC)
	if recent > len(gc1.Pause) {
		recent = len(gc1.Pause)
	}
	for _, p := range gc1.Pause[:recent] {
		if p > pauseMax {
			pauseMax = p
		}
	}
	out["loadgen"] = map[string]any{
		"loopDelayP99ms": round(pct(late, 99)),
		"loopDelayMaxms": round(pct(late, 100)),
		"gcMs":           (gc1.PauseTotal - gc0.PauseTotal).Milliseconds(),
		"gcMaxMs":        round(float64(pauseMax.Nanoseconds()) / 1e6),
	}
	enc, _ := json.Marshal(out)
	fmt.Println(string(enc))
}
