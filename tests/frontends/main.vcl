# Minimal main VCL that validates a rendered builtin:varnish snippet.
# Placeholders: @DIR@ absolute temp dir (holds this file as main.vcl and the snippet as
# backends.vcl), @NAME@ the director name (after `ident`). @PORT@ is unused: -C listens nowhere.
# Check: varnishd -C -f @DIR@/main.vcl -n @DIR@/varnish
vcl 4.1;

import directors;

# Must come before any sub that uses the director.
include "@DIR@/backends.vcl";

sub vcl_init {
    # Same-named subs are concatenated: the main VCL may have its own vcl_init.
}

sub vcl_recv {
    set req.backend_hint = @NAME@.backend();
}
