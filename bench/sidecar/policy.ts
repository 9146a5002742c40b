// The benchmarks' orders policy: `rules` rules, the one that matches the measured request last
// (`methods`: what it allows on /orders/:id; GET unless the bench posts bodies).
export const WEB = 'spiffe://example.org/ns/shop/sa/web';
export const ORDERS = 'spiffe://example.org/ns/shop/sa/orders';

export function policyYaml(rules: number, methods: readonly string[] = ['GET']): string {
  const lines = [
    `service: ${ORDERS}`,
    'mode: enforce',
    'roles:',
    `  storefront: [${WEB}]`,
    '  others: [spiffe://example.org/ns/ops/sa/admin-console]',
    'rules:',
  ];
  for (let i = 0; i < rules - 2; i++) {
    const effect = i % 10 === 0 ? 'deny' : 'allow';
    lines.push(
      `  - id: filler-${i}`,
      `    effect: ${effect}`,
      `    ${i % 3 === 0 ? 'role: others' : `subjects: ['*']`}`,
      `    methods: [${['POST', 'PUT', 'DELETE', 'GET'][i % 4]}]`,
      `    paths: [/svc${i}/:id, /svc${i}/items/*]`,
    );
  }
  lines.push(
    '  - id: nobody-touches-admin',
    '    effect: deny',
    "    subjects: ['*']",
    '    paths: [/admin, /admin/*]',
  );
  lines.push(
    '  - id: storefront-reads-orders',
    '    role: storefront',
    `    methods: [${methods.join(', ')}]`,
    '    paths: [/orders, /orders/:id]',
  );
  return lines.join('\n') + '\n';
}
