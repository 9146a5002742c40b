// Imported first by test/e2e/sidecar-built.test.ts: the mesh (mesh.ts) reads this when it loads.
process.env.PORTCULLIS_SIDECAR_BUILD = '1';
