# Main VCL for tests/live.rs: the rendered backends.vcl defines director `web`.
# Placeholders: @DIR@ absolute work dir.
# Start: varnishd -F -n @DIR@/varnish -a 127.0.0.1:PORT -T 127.0.0.1:ADMIN -S @DIR@/secret -f @DIR@/main.vcl
# Check: varnishd -C -f @DIR@/main.vcl -n @DIR@/varnish-check
# Reload: varnishadm vcl.load NAME @DIR@/main.vcl, then vcl.use NAME
vcl 4.1;

import directors;

include "@DIR@/backends.vcl";

sub vcl_recv {
    set req.backend_hint = web.backend();
    # The backends answer with their identity: never cache it, every request goes to a backend.
    return (pass);
}
