<?php
// A queue worker in PHP: claims messages of a consumer group over HTTP, handles them, and
// settles them. It competes fairly with WebSocket consumers of the same group.
//
//   WSQ_URL=http://127.0.0.1:8000 WSQ_ISSUER=acme WSQ_SECRET=... \
//     php worker.php jobs [group] [--max N] [--idle SECONDS]
//
// Prints one line per message handled: "<position> <body as JSON>". Stops after --max
// messages, or after --idle seconds without any (default: run forever).
declare(strict_types=1);
require __DIR__ . '/wsq.php';

$args = array_slice($argv, 1);
$max = null;
$idle = null;
$positional = [];
for ($i = 0; $i < count($args); $i++) {
    if ($args[$i] === '--max') {
        $max = (int) $args[++$i];
    } elseif ($args[$i] === '--idle') {
        $idle = (float) $args[++$i];
    } else {
        $positional[] = $args[$i];
    }
}
if ($positional === []) {
    fwrite(STDERR, "usage: php worker.php <address> [group] [--max N] [--idle SECONDS]\n");
    exit(2);
}
$address = $positional[0];
$group = $positional[1] ?? 'default';
$base = rtrim(getenv('WSQ_URL') ?: 'http://127.0.0.1:8000', '/');
$claims = "$base/v1/addresses/" . rawurlencode($address) . '/claims';

/** The work itself: here, print it. Throw to have the message redelivered later. */
function handle(array $message): void
{
    echo $message['id'], ' ', json_encode($message['body']), "\n";
}

$done = 0;
$lastWork = microtime(true);
while ($max === null || $done < $max) {
    $token = wsq_env_token('php-worker', [], [$address]); // fresh: a worker runs for long
    try {
        [$status, $claim] = wsq_request('POST', $claims, $token, [
            'group' => $group,
            'limit' => $max === null ? 10 : min(10, $max - $done),
            'lease' => 30000,
        ]);
    } catch (WsqError $e) {
        if (!in_array($e->status, [0, 429, 503], true)) {
            fwrite(STDERR, $e->getMessage() . "\n");
            exit(1);
        }
        sleep(max(1, $e->retryAfter ?? 1));
        continue;
    }
    if ($status === 204) { // nothing to do
        if ($idle !== null && microtime(true) - $lastWork > $idle) {
            break;
        }
        usleep(200_000);
        continue;
    }
    $settle = "$claims/" . rawurlencode($claim['claim']) . '/settle';
    $accepted = [];
    $failed = [];
    foreach ($claim['messages'] as $message) {
        try {
            handle($message);
            $accepted[] = $message['id'];
        } catch (Throwable $e) {
            fwrite(STDERR, "failed {$message['id']}: {$e->getMessage()}\n");
            $failed[] = $message['id'];
        }
    }
    if ($accepted !== []) {
        wsq_request('POST', $settle, $token, ['ids' => $accepted, 'outcome' => 'accepted']);
    }
    if ($failed !== []) {
        wsq_request('POST', $settle, $token, ['ids' => $failed, 'outcome' => 'modified']);
    }
    $done += count($accepted);
    $lastWork = microtime(true);
}
