#!/bin/bash
# Docker HEALTHCHECK of the Ambry image: exit 0 iff this container's daemon answers
# /healthCheck with 200 (GOOD).
#
# It runs every few seconds in every container, so it is cheap on purpose: bash alone (no
# Python start, no config parsing, no fork), one HTTP/1.0 request through bash's /dev/tcp.
# (The Python check it replaces re-read the whole cluster YAML each time: about 0.2 of a core
# for the 8 containers of docker-compose.yml with the cluster idle.)
#
# Where it asks:
#   AMBRY_HEALTH_URL   http://HOST:PORT[/PATH], if set; otherwise
#   AMBRY_HEALTH_HOST  default: this container's hostname (the cluster map's host of the
#                      daemon, which listens there)
#   AMBRY_HEALTH_PORT  default: by the daemon's role, found in /proc: 1174 for
#                      `ambry frontend` (or its --port), 6680 for `ambry server`: the ports
#                      of config/docker.yaml. docker-compose.yml sets it for each service.
set -u

role_port() {
    # sets port from the first `ambry frontend|server` process of this container (no fork:
    # mapfile reads each argv from /proc)
    local f argv i
    for f in /proc/[0-9]*/cmdline; do
        mapfile -d '' argv < "$f" 2>/dev/null || continue
        for ((i = 0; i + 1 < ${#argv[@]}; i++)); do
            case ${argv[i]} in
                */ambry | ambry | ambry.cli) ;;
                *) continue ;;
            esac
            case ${argv[i + 1]} in
                server) port=6680; return 0 ;;
                frontend)
                    local j
                    port=1174
                    for ((j = i + 2; j < ${#argv[@]}; j++)); do
                        case ${argv[j]} in
                            --port) port=${argv[j + 1]:-$port} ;;
                            --port=*) port=${argv[j]#--port=} ;;
                        esac
                    done
                    return 0 ;;
            esac
            break
        done
    done
    return 1
}

path=/healthCheck
if [[ -n ${AMBRY_HEALTH_URL:-} ]]; then
    rest=${AMBRY_HEALTH_URL#http://}
    hostport=${rest%%/*}
    [[ $rest == */* ]] && path=/${rest#*/}
    host=${hostport%:*}
    port=${hostport##*:}
    [[ $port == "$hostport" ]] && port=80
else
    host=${AMBRY_HEALTH_HOST:-${HOSTNAME:-127.0.0.1}}
    port=${AMBRY_HEALTH_PORT:-}
    if [[ -z $port ]] && ! role_port; then
        echo "no \`ambry server\` or \`ambry frontend\` process in this container"
        exit 1
    fi
fi

where="http://$host:$port$path"
if ! exec 3<>"/dev/tcp/$host/$port"; then
    echo "$where: cannot connect"
    exit 1
fi 2>/dev/null
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" >&3
if ! IFS= read -r -t 2 status <&3; then
    echo "$where: no reply"
    exit 1
fi
status=${status%$'\r'}
body=""
while IFS= read -r -t 2 line <&3; do   # headers, then the first line of the body
    line=${line%$'\r'}
    [[ -z $line ]] && { IFS= read -r -t 2 body <&3; break; }
done
exec 3<&-
echo "$where: ${status#HTTP/1.? } ${body:0:32}"
[[ $status == HTTP/1.[01]" 200"* ]]
