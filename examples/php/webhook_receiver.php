<?php
// A receiver of wsq's webhooks that verifies the Standard Webhooks signature by hand.
//
//   WSQ_WEBHOOK_SECRET=whsec_... php -S 127.0.0.1:8080 webhook_receiver.php
//
// Answers 204 to a request whose signature verifies and whose timestamp is within five
// minutes, 400 to any other; logs each event's type and webhook-id (never the body).
// Signed content: "<webhook-id>.<webhook-timestamp>.<body>", HMAC-SHA256 with the key that is
// the base64 after "whsec_"; webhook-signature holds one or more "v1,<base64>", space-separated
// (two during a secret rotation). Symfony's Webhook component verifies the same scheme.
declare(strict_types=1);

const TOLERANCE_S = 300;

function refuse(string $why): never
{
    error_log("refused: $why");
    http_response_code(400);
    exit;
}

if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    http_response_code(405);
    exit;
}
$secret = getenv('WSQ_WEBHOOK_SECRET') ?: '';
$key = base64_decode(preg_replace('/^whsec_/', '', $secret), true);
if ($key === false || $key === '') {
    http_response_code(500);
    exit;
}
$id = $_SERVER['HTTP_WEBHOOK_ID'] ?? '';
$timestamp = $_SERVER['HTTP_WEBHOOK_TIMESTAMP'] ?? '';
$signatures = $_SERVER['HTTP_WEBHOOK_SIGNATURE'] ?? '';
if ($id === '' || !ctype_digit($timestamp) || $signatures === '') {
    refuse('missing headers');
}
if (abs(time() - (int)$timestamp) > TOLERANCE_S) {
    refuse('timestamp out of tolerance');
}
$body = file_get_contents('php://input');
$expected = base64_encode(hash_hmac('sha256', "$id.$timestamp.$body", $key, true));
$ok = false;
foreach (explode(' ', $signatures) as $signature) {
    [$version, $value] = array_pad(explode(',', $signature, 2), 2, '');
    if ($version === 'v1' && hash_equals($expected, $value)) {
        $ok = true;
    }
}
if (!$ok) {
    refuse('no matching signature');
}
$event = json_decode($body, true);
error_log(sprintf('%s %s', is_array($event) ? ($event['type'] ?? '?') : '?', $id));
http_response_code(204);
