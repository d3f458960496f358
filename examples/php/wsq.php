<?php
// A tiny client of the wsq HTTP bridge: PHP standard library only (streams, hash, json).
// docs/http-api.md describes every endpoint used here.
declare(strict_types=1);

final class WsqError extends RuntimeException
{
    public function __construct(
        public readonly int $status,
        public readonly string $condition,
        string $description,
        public readonly ?int $retryAfter = null,
    ) {
        parent::__construct("$status $condition: $description");
    }
}

function wsq_b64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

/** A short-lived HS256 token for the gateway, signed with the tenant's secret. */
function wsq_token(
    string $issuer,
    string $secret,
    string $sub,
    array $publish = [],
    array $subscribe = [],
    int $ttl = 300,
    ?string $kid = null,
): string {
    $header = ['alg' => 'HS256', 'typ' => 'JWT'];
    if ($kid !== null) {
        $header['kid'] = $kid;
    }
    $now = time();
    $claims = [
        'iss' => $issuer,
        'sub' => $sub,
        'iat' => $now,
        'exp' => $now + $ttl,
        'wsq' => ['publish' => $publish, 'subscribe' => $subscribe],
    ];
    $signing = wsq_b64url(json_encode($header)) . '.' . wsq_b64url(json_encode($claims));
    return $signing . '.' . wsq_b64url(hash_hmac('sha256', $signing, $secret, true));
}

/** The token to use: WSQ_TOKEN, or one minted from WSQ_ISSUER / WSQ_SECRET (/ WSQ_KID). */
function wsq_env_token(string $sub, array $publish, array $subscribe): string
{
    $token = getenv('WSQ_TOKEN');
    if ($token !== false && $token !== '') {
        return $token;
    }
    $issuer = getenv('WSQ_ISSUER');
    $secret = getenv('WSQ_SECRET');
    if ($issuer === false || $secret === false) {
        fwrite(STDERR, "set WSQ_TOKEN, or WSQ_ISSUER and WSQ_SECRET\n");
        exit(2);
    }
    $kid = getenv('WSQ_KID');
    return wsq_token($issuer, $secret, $sub, $publish, $subscribe, 300, $kid === false ? null : $kid);
}

/**
 * One request. Answers [status, decoded JSON body or null]; throws WsqError on an error answer.
 */
function wsq_request(string $method, string $url, string $token, ?array $body = null, array $headers = []): array
{
    $lines = ["Authorization: Bearer $token", 'Accept: application/json'];
    foreach ($headers as $name => $value) {
        $lines[] = "$name: $value";
    }
    $options = [
        'method' => $method,
        'header' => $lines,
        'ignore_errors' => true, // read the JSON error body of a 4xx / 5xx too
        'timeout' => 10,
        'protocol_version' => 1.1,
    ];
    if ($body !== null) {
        $options['content'] = json_encode($body, JSON_THROW_ON_ERROR);
        $options['header'][] = 'Content-Type: application/json';
    }
    $options['header'][] = 'Connection: close';
    $text = @file_get_contents($url, false, stream_context_create(['http' => $options]));
    $response = function_exists('http_get_last_response_headers')
        ? (http_get_last_response_headers() ?? [])
        : ($http_response_header ?? []);
    if ($text === false || $response === []) {
        throw new WsqError(0, 'network', "no answer from $url");
    }
    preg_match('#^HTTP/\S+ (\d{3})#', $response[0], $m);
    $status = (int) $m[1];
    $retryAfter = null;
    foreach ($response as $line) {
        if (stripos($line, 'Retry-After:') === 0) {
            $retryAfter = (int) trim(substr($line, 12));
        }
    }
    $json = $text === '' ? null : json_decode($text, true);
    if ($status >= 400) {
        $error = $json['error'] ?? ['condition' => 'unknown', 'description' => $text];
        throw new WsqError($status, $error['condition'], $error['description'], $retryAfter);
    }
    return [$status, $json];
}

/**
 * Publish messages to an address: answers their positions. Retries what may be retried (429,
 * 503, network) with one Idempotency-Key, so a retry never stores a message twice.
 */
function wsq_publish(string $base, string $token, string $address, array $messages, int $tries = 5): array
{
    $key = bin2hex(random_bytes(16));
    $url = rtrim($base, '/') . '/v1/addresses/' . rawurlencode($address) . '/messages';
    for ($try = 1; ; $try++) {
        try {
            [, $answer] = wsq_request('POST', $url, $token, ['messages' => $messages], ['Idempotency-Key' => $key]);
            return $answer['ids'];
        } catch (WsqError $e) {
            $retryable = in_array($e->status, [0, 429, 503], true);
            if (!$retryable || $try >= $tries) {
                throw $e;
            }
            sleep(max(1, $e->retryAfter ?? $try));
        }
    }
}
