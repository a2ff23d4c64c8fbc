{{/*
The sidecar container, as one list item. Put it under initContainers when
(include "outrigger.native" $ctx) is "true" (a native sidecar), under containers otherwise:

  {{- $outrigger := dict "root" . "values" .Values.outrigger }}
  {{- if include "outrigger.native" $outrigger }}
  initContainers:
    {{- include "outrigger.sidecar" $outrigger | nindent 8 }}
  {{- end }}

docs/kubernetes.md has the whole pod template.
*/}}
{{- define "outrigger.sidecar" -}}
{{- include "outrigger.validate" . -}}
{{- $v := .values -}}
{{- $native := include "outrigger.native" . -}}
- name: {{ $v.containerName }}
  image: {{ include "outrigger.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $native }}
  # A native sidecar: started before the app containers, stopped after they have exited.
  restartPolicy: Always
  {{- end }}
  args:
    - run
    - --config
    - /etc/outrigger/policy.toml
  ports:
    - name: outrigger-admin
      containerPort: {{ $v.admin.port }}
      protocol: TCP
  env:
    # Beyond loopback so the kubelet (probes) and Prometheus reach it; allowed with the token.
    - name: OUTRIGGER__ADMIN__LISTEN
      value: {{ printf "%s:%d" $v.admin.listenAddress (int $v.admin.port) | quote }}
    - name: OUTRIGGER__ADMIN__TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ include "outrigger.tokenSecret" . }}
          key: {{ $v.admin.token.key }}
    # Drains within the pod's termination grace.
    - name: OUTRIGGER__SHUTDOWN__GRACE_PERIOD
      value: {{ printf "%ds" (int $v.shutdown.gracePeriodSeconds) | quote }}
    {{- if eq $v.policy.onChange "reload" }}
    # Apply a changed policy file without a restart: the kubelet updates the mounted
    # ConfigMap in place, and nothing sends a signal.
    - name: OUTRIGGER__RELOAD__WATCH
      value: "true"
    - name: OUTRIGGER__RELOAD__INTERVAL
      value: {{ $v.policy.reloadInterval | quote }}
    {{- end }}
    {{- if $v.data.enabled }}
    - name: OUTRIGGER__DEDUP__EMBEDDED__PATH
      value: /var/lib/outrigger/dedup.redb
    {{- end }}
    {{- if $v.log.format }}
    - name: OUTRIGGER__LOG__FORMAT
      value: {{ $v.log.format | quote }}
    {{- end }}
    {{- range $v.secretEnv }}
    - name: {{ .name }}
      valueFrom:
        secretKeyRef:
          name: {{ .secretName }}
          key: {{ .secretKey }}
          {{- if hasKey . "optional" }}
          optional: {{ .optional }}
          {{- end }}
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.secretEnvFrom }}
  envFrom:
    {{- range . }}
    - secretRef:
        name: {{ . }}
    {{- end }}
  {{- end }}
  startupProbe:
    httpGet:
      path: /healthz
      port: outrigger-admin
    periodSeconds: {{ $v.probes.startup.periodSeconds }}
    failureThreshold: {{ $v.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $v.probes.startup.timeoutSeconds }}
  {{- if $v.probes.readiness.enabled }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: outrigger-admin
    periodSeconds: {{ $v.probes.readiness.periodSeconds }}
    failureThreshold: {{ $v.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
  {{- end }}
  {{- if $v.probes.liveness.enabled }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: outrigger-admin
    periodSeconds: {{ $v.probes.liveness.periodSeconds }}
    failureThreshold: {{ $v.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
  {{- end }}
  {{- if not $native }}
  # A regular container gets SIGTERM together with the app. Hold it until the app stops
  # accepting connections (at most shutdown.appStopSeconds), as a native sidecar is held until
  # the app has exited: every answer the app gives while it stops is still recorded and acked.
  lifecycle:
    preStop:
      exec:
        command:
          - /bin/bash
          - -c
          - {{ printf "for _ in $(seq %d); do (exec 3<>/dev/tcp/127.0.0.1/%d) 2>/dev/null || exit 0; sleep 1; done" (int $v.shutdown.appStopSeconds) (int $v.appPort) | quote }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    # The whole directory, never a subPath: the kubelet updates a directory mount in place
    # when the ConfigMap changes (a subPath mount keeps the file the container started with).
    - name: outrigger-policy
      mountPath: /etc/outrigger
      readOnly: true
    {{- if $v.data.enabled }}
    - name: outrigger-data
      mountPath: /var/lib/outrigger
    {{- end }}
{{- end -}}

{{/* The sidecar's volumes, as list items for the pod's volumes. */}}
{{- define "outrigger.volumes" -}}
{{- $v := .values -}}
- name: outrigger-policy
  configMap:
    name: {{ include "outrigger.policyConfigMap" . }}
    items:
      - key: {{ $v.policy.key }}
        path: policy.toml
{{- if $v.data.enabled }}
- name: outrigger-data
  {{- if eq $v.data.type "persistentVolumeClaim" }}
  persistentVolumeClaim:
    claimName: {{ $v.data.existingClaim | default (printf "%s-data" (include "outrigger.fullname" .)) }}
  {{- else }}
  {{- if $v.data.sizeLimit }}
  emptyDir:
    sizeLimit: {{ $v.data.sizeLimit }}
  {{- else }}
  emptyDir: {}
  {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
