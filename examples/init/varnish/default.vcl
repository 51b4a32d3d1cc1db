# /etc/varnish/default.vcl: uses the director `web` that elasticd renders into
# /etc/varnish/web-backends.vcl.
vcl 4.1;

import directors;

include "/etc/varnish/web-backends.vcl";

sub vcl_recv {
    set req.backend_hint = web.backend();
}
