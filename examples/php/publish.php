<?php
// Publish one message to a wsq address from PHP; browsers subscribed over wsq.v1 receive it.
//
//   WSQ_URL=http://127.0.0.1:8000 WSQ_ISSUER=acme WSQ_SECRET=... \
//     php publish.php chat.room1 '{"text":"hello"}' [message_id]
//
// Prints the message's position. Exit code 1 with the wsq: condition on an error.
declare(strict_types=1);
require __DIR__ . '/wsq.php';

if ($argc < 3) {
    fwrite(STDERR, "usage: php publish.php <address> <json body> [message_id]\n");
    exit(2);
}
[, $address, $json] = $argv;
$message = ['body' => json_decode($json, true, 512, JSON_THROW_ON_ERROR)];
if (isset($argv[3])) {
    $message['message_id'] = $argv[3];
}
$base = getenv('WSQ_URL') ?: 'http://127.0.0.1:8000';
$token = wsq_env_token('php-publisher', [$address], []);
try {
    [$position] = wsq_publish($base, $token, $address, [$message]);
    echo $position, "\n";
} catch (WsqError $e) {
    fwrite(STDERR, $e->getMessage() . "\n");
    exit(1);
}
