{{/*
Egress rules derived from the configuration that names each peer (see docs/operations.md,
"Network policies"). One value names a peer once: the same host and port give the service its
setting and the NetworkPolicy its rule, so the two cannot disagree.

A host that is an IP address becomes a /32 (/128) ipBlock. A host name cannot: NetworkPolicies
match addresses, and the chart does not resolve names (the answer would change behind its back).
A host name therefore needs the CIDRs it resolves to, or in-cluster peers (namespace/pod
selectors), from the values; without them the render fails and says which value to set.
*/}}

{{/* "true" when . (a host) is an IPv4 or IPv6 address literal, else "". */}}
{{- define "cloudpacs.egress.isIP" -}}
{{- if or (regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" .) (contains ":" .) -}}true{{- end -}}
{{- end -}}

{{/* The single-address CIDR of an IP literal. */}}
{{- define "cloudpacs.egress.hostCIDR" -}}
{{- ternary (printf "%s/128" .) (printf "%s/32" .) (contains ":" .) -}}
{{- end -}}

{{/*
{host, port} of a URL, as JSON (context: dict "url" URL "defaultPort" N). The port is the URL's,
else the scheme's (https 443, http 80), else defaultPort. Never prints the URL: a database URL
carries a password.
*/}}
{{- define "cloudpacs.egress.urlPeer" -}}
{{- $u := urlParse .url -}}
{{- $port := int64 (.defaultPort | default 0) -}}
{{- if eq $u.scheme "https" }}{{ $port = 443 }}{{ end -}}
{{- if eq $u.scheme "http" }}{{ $port = 80 }}{{ end -}}
{{- if ne $u.host $u.hostname -}}
{{- $port = int64 (last (splitList ":" $u.host)) -}}
{{- end -}}
{{- dict "host" $u.hostname "port" $port | toJson -}}
{{- end -}}

{{/* {host, port} of each host:port of a comma-separated list (Kafka's bootstrap), as JSON. */}}
{{- define "cloudpacs.egress.hostPorts" -}}
{{- $out := list -}}
{{- range $entry := splitList "," . -}}
{{- $entry = trim $entry -}}
{{- if $entry -}}
{{- $parts := splitList ":" $entry -}}
{{- $host := join ":" (initial $parts) | trimPrefix "[" | trimSuffix "]" -}}
{{- $out = append $out (dict "host" $host "port" (int64 (last $parts))) -}}
{{- end -}}
{{- end -}}
{{- dict "peers" $out | toJson -}}
{{- end -}}

{{/*
One egress rule (a list item of NetworkPolicySpec.egress, with a comment line before it).
Context (dict):
  comment   what the rule is for (rendered as a YAML comment)
  hosts     list of {host, port} the configuration connects to (may be empty)
  ports     further ports from the values
  cidrs     CIDRs from the values (what the host names resolve to)
  peers     NetworkPolicyPeers from the values (in-cluster destinations)
  what      how the error messages name the peer
  cidrsKey  the value to set for CIDRs (for the messages)
  peersKey  the value to set for in-cluster peers, or "" when there is none
  portsKey  the value to set for ports, or "" when the port always comes from the address
*/}}
{{- define "cloudpacs.egress.rule" -}}
{{- $cidrs := list -}}
{{- range .cidrs -}}{{- $cidrs = append $cidrs . -}}{{- end -}}
{{- $ports := list -}}
{{- range .hosts -}}
{{- $ports = append $ports (int64 .port) -}}
{{- if include "cloudpacs.egress.isIP" .host -}}
{{- $cidrs = append $cidrs (include "cloudpacs.egress.hostCIDR" .host) -}}
{{- else if not (or $.cidrs $.peers) -}}
{{- $alternative := ternary (printf " (or %s: in-cluster peers)" $.peersKey) "" (ne $.peersKey "") -}}
{{- fail (printf "%s names the host %s, which is not an IP address: set %s to the CIDRs it resolves to%s, so that the NetworkPolicy can allow it; or set networkPolicy.egress.enabled=false if you manage egress elsewhere" $.what .host $.cidrsKey $alternative) -}}
{{- end -}}
{{- end -}}
{{- range .ports -}}{{- $ports = append $ports (int64 .) -}}{{- end -}}
{{- if not (or $cidrs .peers) -}}
{{- fail (printf "%s: the chart does not know its address: set %s (or %s)" .what .cidrsKey .peersKey) -}}
{{- end -}}
{{- if not $ports -}}
{{- fail (printf "%s: the chart does not know its port: set %s" .what .portsKey) -}}
{{- end -}}
# {{ .comment }}
- to:
    {{- range uniq $cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with .peers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- range uniq $ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end -}}

{{/*
The egress rules of one component (context: the component context), after DNS and its gRPC
dependencies: the external systems its `uses` name, the site registry's DICOM destinations, its
`egress` entries, then its `networkPolicy.extraEgress`.
*/}}
{{- define "cloudpacs.egress.rules" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $np := $root.Values.networkPolicy -}}
{{- $v := $root.Values -}}
{{- if $c.uses.kafka -}}
{{- $e := $np.egress.kafka -}}
{{- $hosts := (include "cloudpacs.egress.hostPorts" $v.kafka.bootstrap | fromJson).peers }}
{{ include "cloudpacs.egress.rule" (dict "comment" "Kafka: the bootstrap brokers (kafka.bootstrap) and networkPolicy.egress.kafka." "hosts" $hosts "ports" $e.ports "cidrs" $e.cidrs "peers" $e.peers "what" (printf "kafka.bootstrap (used by %s)" .name) "cidrsKey" "networkPolicy.egress.kafka.cidrs" "peersKey" "networkPolicy.egress.kafka.peers" "portsKey" "networkPolicy.egress.kafka.ports") }}
{{- end -}}
{{- if or $c.uses.s3 $c.uses.s3Grants -}}
{{- $e := $np.egress.s3 -}}
{{- $urls := list -}}
{{- $keys := list -}}
{{- if $c.uses.s3 -}}
{{- $urls = append $urls $v.s3.endpoint -}}
{{- $keys = append $keys "s3.endpoint" -}}
{{- end -}}
{{- if $c.uses.s3Grants -}}
{{- /* Grants carry storage's grant endpoint, else the endpoint storage itself uses. */ -}}
{{- $storage := index $.all "storage" | default dict -}}
{{- $grant := (($storage.settings | default dict).grant_s3_endpoint) | default $v.s3.endpoint -}}
{{- $urls = append $urls $grant -}}
{{- $keys = append $keys (ternary "s3.endpoint (storage's grants)" "components.storage.settings.grant_s3_endpoint" (eq $grant $v.s3.endpoint)) -}}
{{- end -}}
{{- $hosts := list -}}
{{- range uniq $urls -}}
{{- $hosts = append $hosts (include "cloudpacs.egress.urlPeer" (dict "url" .) | fromJson) -}}
{{- end }}
{{ include "cloudpacs.egress.rule" (dict "comment" (printf "S3: %s." (join ", " (uniq $keys))) "hosts" $hosts "ports" $e.ports "cidrs" $e.cidrs "peers" $e.peers "what" (join " and " (uniq $keys)) "cidrsKey" "networkPolicy.egress.s3.cidrs" "peersKey" "networkPolicy.egress.s3.peers" "portsKey" "networkPolicy.egress.s3.ports") }}
{{- end -}}
{{- if $c.uses.database -}}
{{- $e := $np.egress.database -}}
{{- $hosts := list -}}
{{- $what := "database.url" -}}
{{- if and $v.database.url (not $v.database.existingSecret) -}}
{{- $hosts = list (include "cloudpacs.egress.urlPeer" (dict "url" $v.database.url "defaultPort" 5432) | fromJson) -}}
{{- else -}}
{{- $what = printf "PostgreSQL (the URL is in the Secret %s)" (include "cloudpacs.databaseSecretName" $root) -}}
{{- end }}
{{ include "cloudpacs.egress.rule" (dict "comment" "PostgreSQL: database.url's host, or networkPolicy.egress.database." "hosts" $hosts "ports" $e.ports "cidrs" $e.cidrs "peers" $e.peers "what" $what "cidrsKey" "networkPolicy.egress.database.cidrs" "peersKey" "networkPolicy.egress.database.peers" "portsKey" "networkPolicy.egress.database.ports") }}
{{- end -}}
{{- if $c.uses.auth -}}
{{- $e := $np.egress.oidc -}}
{{- $key := ternary "auth.jwksUrl" "auth.issuer" (ne $v.auth.jwksUrl "") -}}
{{- $host := include "cloudpacs.egress.urlPeer" (dict "url" ($v.auth.jwksUrl | default $v.auth.issuer)) | fromJson }}
{{ include "cloudpacs.egress.rule" (dict "comment" (printf "The OpenID provider's signing keys (%s)." $key) "hosts" (list $host) "ports" $e.ports "cidrs" $e.cidrs "peers" $e.peers "what" $key "cidrsKey" "networkPolicy.egress.oidc.cidrs" "peersKey" "networkPolicy.egress.oidc.peers" "portsKey" "networkPolicy.egress.oidc.ports") }}
{{- end -}}
{{- with $v.tracing.otlpEndpoint -}}
{{- $e := $np.egress.otlp -}}
{{- $host := include "cloudpacs.egress.urlPeer" (dict "url" .) | fromJson }}
{{ include "cloudpacs.egress.rule" (dict "comment" "Traces: tracing.otlpEndpoint." "hosts" (list $host) "ports" $e.ports "cidrs" $e.cidrs "peers" $e.peers "what" "tracing.otlpEndpoint" "cidrsKey" "networkPolicy.egress.otlp.cidrs" "peersKey" "networkPolicy.egress.otlp.peers" "portsKey" "networkPolicy.egress.otlp.ports") }}
{{- end -}}
{{- if $c.dicom.enabled -}}
{{- range $tenant, $t := ($c.dicom.siteRegistry.tenants | default dict) -}}
{{- range $site, $s := ($t.sites | default dict) -}}
{{- range $d := ($s.destinations | default list) }}
{{ include "cloudpacs.egress.rule" (dict "comment" (printf "DICOM destination %s of %s/%s (C-MOVE, Storage Commitment reports, routing)." $d.ae_title $tenant $site) "hosts" (list (dict "host" $d.host "port" $d.port)) "ports" (list) "cidrs" ($d.cidrs | default list) "peers" ($d.peers | default list) "what" (printf "components.%s.dicom.siteRegistry destination %s (%s/%s)" $.name $d.ae_title $tenant $site) "cidrsKey" "the destination's cidrs" "peersKey" "its peers" "portsKey" "") }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name, $d := (($c.routes | default dict).destinations | default dict) -}}
{{- $host := dict "host" $d.host "port" $d.port -}}
{{- if eq $d.kind "stow" -}}
{{- $host = include "cloudpacs.egress.urlPeer" (dict "url" $d.url) | fromJson -}}
{{- end }}
{{ include "cloudpacs.egress.rule" (dict "comment" (printf "Routing destination %s (%s)." $name $d.kind) "hosts" (list $host) "ports" (list) "cidrs" ($d.cidrs | default list) "peers" ($d.peers | default list) "what" (printf "components.%s.routes destination %s" $.name $name) "cidrsKey" "the destination's cidrs" "peersKey" "its peers" "portsKey" "") }}
{{- end -}}
{{- range $tenant, $f := (($c.routes | default dict).prefetch | default dict) -}}
{{- $a := $f.archive }}
{{ include "cloudpacs.egress.rule" (dict "comment" (printf "Prefetch archive %s of %s (C-FIND, C-MOVE)." $a.ae_title $tenant) "hosts" (list (dict "host" $a.host "port" $a.port)) "ports" (list) "cidrs" ($a.cidrs | default list) "peers" ($a.peers | default list) "what" (printf "components.%s.routes prefetch archive of %s" $.name $tenant) "cidrsKey" "the archive's cidrs" "peersKey" "its peers" "portsKey" "") }}
{{- end -}}
{{- range $key, $entry := $c.egress -}}
{{- if $entry.host }}
{{ include "cloudpacs.egress.rule" (dict "comment" (printf "components.%s.egress.%s." $.name $key) "hosts" (list (dict "host" $entry.host "port" $entry.port)) "ports" (list) "cidrs" ($entry.cidrs | default list) "peers" ($entry.peers | default list) "what" (printf "components.%s.egress.%s" $.name $key) "cidrsKey" (printf "components.%s.egress.%s.cidrs" $.name $key) "peersKey" (printf "components.%s.egress.%s.peers" $.name $key) "portsKey" "") }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Settings of a component's `egress` entries: each `settings` key becomes PACS_<NAME>_<KEY>, its
value with {host} and {port} replaced by the entry's. Context: the component context plus
"data", the ConfigMap data dict to fill.
*/}}
{{- define "cloudpacs.egress.settings" -}}
{{- $p := include "cloudpacs.component.envPrefix" . -}}
{{- range $key, $entry := .c.egress -}}
{{- if $entry.host -}}
{{- range $setting, $template := ($entry.settings | default dict) -}}
{{- $value := $template | replace "{host}" $entry.host | replace "{port}" (toString (int64 $entry.port)) -}}
{{- $_ := set $.data (printf "%s%s" $p ($setting | upper | replace "-" "_")) $value -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The site registry as the gateway reads it: destinations without the chart's cidrs/peers. */}}
{{- define "cloudpacs.egress.registryForGateway" -}}
{{- $registry := deepCopy . -}}
{{- range $tenant, $t := ($registry.tenants | default dict) -}}
{{- range $site, $s := ($t.sites | default dict) -}}
{{- if $s.destinations -}}
{{- $clean := list -}}
{{- range $s.destinations -}}
{{- $clean = append $clean (omit . "cidrs" "peers") -}}
{{- end -}}
{{- $_ := set $s "destinations" $clean -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $registry -}}
{{- end -}}

{{/* The routing rules as the router reads them: destinations and archives without the chart's
cidrs/peers. */}}
{{- define "cloudpacs.egress.routesForRouter" -}}
{{- $routes := deepCopy . -}}
{{- $clean := dict -}}
{{- range $name, $d := ($routes.destinations | default dict) -}}
{{- $_ := set $clean $name (omit $d "cidrs" "peers") -}}
{{- end -}}
{{- if $routes.destinations }}{{ $_ := set $routes "destinations" $clean }}{{ end -}}
{{- range $tenant, $f := ($routes.prefetch | default dict) -}}
{{- $_ := set $f "archive" (omit $f.archive "cidrs" "peers") -}}
{{- end -}}
{{- toYaml $routes -}}
{{- end -}}
