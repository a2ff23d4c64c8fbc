{{/*
Every template here takes a context dict: (dict "root" $ "values" $values), where $ is the
calling template's top-level context and $values the outrigger values. Inside this chart that is
(dict "root" . "values" .Values); a service chart that depends on this one passes its own root
and .Values.outrigger (see docs/kubernetes.md). Names must not depend on .Chart, which is the
caller's chart there.
*/}}

{{/* "<release>-outrigger", or the release name when it already says outrigger. */}}
{{- define "outrigger.fullname" -}}
{{- if .values.fullnameOverride -}}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "outrigger" .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-outrigger" .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of the chart's own objects. */}}
{{- define "outrigger.labels" -}}
helm.sh/chart: {{ printf "outrigger-%s" .root.Chart.Version | replace "+" "_" }}
{{ include "outrigger.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "outrigger.selectorLabels" -}}
app.kubernetes.io/name: outrigger
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The pod label the PodMonitor selects on: add it to the pods that carry the sidecar. */}}
{{- define "outrigger.podLabels" -}}
outrigger-sidecar: {{ include "outrigger.fullname" . }}
{{- end -}}

{{- define "outrigger.policyConfigMap" -}}
{{- .values.policy.existingConfigMap | default (printf "%s-policy" (include "outrigger.fullname" .)) -}}
{{- end -}}

{{- define "outrigger.tokenSecret" -}}
{{- .values.admin.token.existingSecret | default (printf "%s-admin-token" (include "outrigger.fullname" .)) -}}
{{- end -}}

{{- define "outrigger.image" -}}
{{- $tag := .values.image.tag | default .root.Chart.AppVersion -}}
{{- if .values.image.digest -}}
{{- printf "%s@%s" .values.image.repository .values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .values.image.repository (toString $tag) -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the sidecar runs as a native sidecar: an init container with restartPolicy Always.
The -0 suffix lets pre-release and vendor versions (v1.29.1-eks-..., v1.30.2-gke...) match.
*/}}
{{- define "outrigger.native" -}}
{{- $mode := toString .values.nativeSidecar -}}
{{- if eq $mode "auto" -}}
{{- if semverCompare ">=1.29-0" .root.Capabilities.KubeVersion.Version -}}true{{- end -}}
{{- else if eq $mode "true" -}}true
{{- end -}}
{{- end -}}

{{/* The pod's terminationGracePeriodSeconds: the app's stop, then the sidecar's drain. */}}
{{- define "outrigger.terminationGracePeriodSeconds" -}}
{{- $s := .values.shutdown -}}
{{- if kindIs "invalid" $s.terminationGracePeriodSeconds -}}
{{- add $s.appStopSeconds $s.gracePeriodSeconds 5 -}}
{{- else -}}
{{- $s.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/*
The policy file's content exactly as the ConfigMap holds it and the sidecar reads it: the TOML
with trailing whitespace trimmed and one newline after it. The ConfigMap renders this string
as a literal block, which keeps every line as it is and ends it with one newline, so the
hashes below are those of the very file in the pod.
*/}}
{{- define "outrigger.policyText" -}}
{{- printf "%s\n" (regexReplaceAll "\\s+\\z" .values.policy.toml "") -}}
{{- end -}}

{{/* sha256 of the inline policy file. */}}
{{- define "outrigger.policyChecksum" -}}
{{- include "outrigger.policyText" . | sha256sum -}}
{{- end -}}

{{/*
The hash outrigger_policy_info reports for the inline policy: the first 12 hex digits of the
file's sha256 (sidecar/app/src/reload.rs). Empty with policy.existingConfigMap.
*/}}
{{- define "outrigger.policyHash" -}}
{{- if not .values.policy.existingConfigMap -}}
{{- include "outrigger.policyChecksum" . | trunc 12 -}}
{{- end -}}
{{- end -}}

{{/*
Pod annotations to add to the pods that carry the sidecar. With policy.onChange rollout, the
policy's checksum: a changed policy changes the pod template, and the pods roll. With reload,
none: the sidecar applies the changed file in place, and a rollout would only restart it.
*/}}
{{- define "outrigger.podAnnotations" -}}
{{- if and (eq .values.policy.onChange "rollout") (not .values.policy.existingConfigMap) -}}
checksum/outrigger-policy: {{ include "outrigger.policyChecksum" . }}
{{- end -}}
{{- end -}}

{{/* Refuses values the sidecar could not run with, each with what to do instead. */}}
{{- define "outrigger.validate" -}}
{{- $v := .values -}}
{{- if and (not $v.policy.toml) (not $v.policy.existingConfigMap) -}}
{{- fail "outrigger: no policy: set policy.toml (the policy TOML inline) or policy.existingConfigMap (a ConfigMap holding it under policy.key)" -}}
{{- end -}}
{{- if and $v.policy.toml $v.policy.existingConfigMap -}}
{{- fail "outrigger: set policy.toml or policy.existingConfigMap, not both" -}}
{{- end -}}
{{- if regexMatch "[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\\s\"']*:[^/@\\s\"']+@" $v.policy.toml -}}
{{- fail "outrigger: policy.toml holds a URL with a password, which would end up in a ConfigMap: leave the credentials out of the policy and pass the whole URL from a Secret with secretEnv (e.g. OUTRIGGER__SOURCE__AMQP__URL, OUTRIGGER__DEDUP__REDIS__URL)" -}}
{{- end -}}
{{- if regexMatch "(?m)^\\s*token\\s*=" $v.policy.toml -}}
{{- fail "outrigger: policy.toml sets an admin token, which would end up in a ConfigMap: remove it; the chart passes admin.token from a Secret as OUTRIGGER__ADMIN__TOKEN" -}}
{{- end -}}
{{- if and (not $v.admin.token.existingSecret) (not $v.admin.token.create) -}}
{{- fail "outrigger: no admin token: the kubelet's probes and Prometheus reach the admin listener from outside the pod, and the sidecar listens beyond loopback only with a token. Set admin.token.existingSecret (a Secret with the token under admin.token.key) or admin.token.create=true" -}}
{{- end -}}
{{- if and $v.data.enabled (eq $v.data.type "persistentVolumeClaim") (eq $v.mode "standalone") (gt (int $v.replicas) 1) -}}
{{- fail "outrigger: data.type persistentVolumeClaim with replicas > 1: the embedded dedup store serves one replica only. Use dedup.store = \"redis\" (and data.enabled=false or data.type=emptyDir) to scale out" -}}
{{- end -}}
{{- end -}}
