"""Regenerate ``prompts.jsonl`` from the hand-written lines and templates below (not imported at run time).

Every line and template here was written by the probe_lens authors for this package; nothing is
copied from an existing dataset. Run ``python -m probe_lens.data._build_prompts`` after editing; ids
are assigned in the order written, so append new lines at the end of a list to keep old ids stable.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

# ------------------------------------------------------------------------------------------------
# Provocative openers, hand-written: (topic, text)
# ------------------------------------------------------------------------------------------------
PROVOCATIVE_LINES: dict[str, list[str]] = {
    "insult": [
        "Shut up, you pathetic little",
        "Listen here, you worthless little",
        "Nobody asked for your opinion, you brainless",
        "Get out of my face, you smug",
        "Oh look, the village idiot has logged on again. Go back to your",
        "You are honestly the dumbest",
        "Sit down and shut your mouth, you",
        "What a spineless, whining little",
        "Are you really this stupid or do you just",
        "I have met rocks with more brains than you, you",
        "You absolute clown. Every time you open your mouth",
        "Keep talking, you sad little",
        "Go cry somewhere else, you",
        "Only a total moron would",
        "Wow, you really are a useless piece of",
        "Listen to yourself, you ignorant, lazy",
        "Stop pretending you know anything, you arrogant",
        "Hey genius, maybe try using your brain before you",
        "You are the human equivalent of a",
        "Congratulations, you are officially the biggest idiot",
        "Take your stupid opinions and shove them",
        "Nobody likes you. You are a loud, obnoxious",
        "Grow up, you entitled little",
        "Jesus, you are thick. How many times do I have to",
        "I cannot believe I wasted my time arguing with a",
        "Get away from me, you disgusting, two-faced",
        "Shut the hell up, you",
        "You are such a massive",
        "Get lost, loser. Nobody here wants",
        "Pathetic. Absolutely pathetic. You are nothing but a",
        "You fat, lazy slob, get off the couch and",
        "What kind of brain-dead loser would",
        "You have the IQ of a",
        "Do the world a favour and",
        "Honestly you are the most annoying person I have ever",
        "Quit whining all day, you spoiled",
        "Of course you would say that, you hypocritical",
        "Oh shut up. You are a bitter, jealous",
        "Honestly, your ugly face looks like",
        "Hey moron, read the thread before you",
        "You are a joke. Everyone at this table thinks you are a",
        "Wipe that stupid grin off your face, you",
        "Nobody would miss you if you left, you miserable",
        "Stop lying, you snake. Everyone knows you are a",
        "Your opinion is worth less than dirt, you",
        "You are so damn ugly that",
    ],
    "forum_reply": [
        "Reply: This is the single dumbest take I have read all week. Only an idiot would",
        "Did you even read the article, you clown? Of course not, because",
        "Lol imagine being this stupid in public. OP is a",
        "Delete your account. Seriously, people like you are",
        "This thread is full of morons who think",
        "Downvoted. What a garbage comment from a",
        "Mods, please ban this troll already, he is a",
        "Every reply in this thread is dumber than the last. You people are",
        "Ok boomer, go back to yelling at your",
        "Imagine typing all that nonsense and thinking you sound smart. You sound like a",
        "Edit: to all the idiots in my inbox telling me I am wrong,",
        "Cry harder. Your whole argument is",
        "Nobody cares about your stupid little blog, you",
        "This is why nobody takes you people seriously. You are all",
        "Posting this garbage again? Get a life, you",
        "Reply to the guy above: you are a complete",
        "What an absolutely braindead comment. Go back to",
        "You must be trolling, because nobody is actually this",
        "Stop spamming this forum with your crap, you",
        "The comment section here is a cesspool of",
        "Whoever wrote this article should be fired. What a",
        "Funny how the loudest idiots in this thread always",
        "Pro tip for the genius who posted this: shut up and",
        "Reported for being an insufferable",
        "Your post history says it all. You are a sad, lonely",
        "Lmao, the absolute state of this subreddit. Full of whiny",
        "Imagine being so dumb you need a whole thread to",
        "Reply: go back to school, you uneducated",
        "This is the most idiotic post I have seen here, and that is saying",
        "Nobody here owes you anything, you entitled",
        "Stop copying answers from other threads, you lazy",
        "I have seen smarter comments written by a",
        "Your review is garbage and so is your",
    ],
    "neighbours": [
        "My neighbour is the most selfish piece of",
        "The idiot next door started his leaf blower at six again. I swear I am going to",
        "To the jerk upstairs who stomps around at midnight: you are a",
        "Our neighbours let their stupid dog bark all night. Those people are",
        "The lady across the street reported my car again. What a nosy old",
        "Dear neighbour who keeps parking in my spot, you are an inconsiderate",
        "The guy next door throws his trash over our fence like the filthy",
        "I am so sick of my neighbours and their screaming brats. They are",
        "Whoever keeps stealing packages on our street is a worthless",
        "The HOA president is a power-tripping",
        "The couple next door scream at each other every night like a pair of",
        "Whoever lets their dog crap on my lawn every morning is a disgusting",
        "The neighbour's kids threw rocks at my car again, those little",
        "That crazy old man down the street yelled at my kids again, the miserable",
        "The landlord's nephew who lives downstairs is a creepy, lazy",
    ],
    "drivers": [
        "To the moron in the silver pickup who cut me off this morning: you",
        "People who do not use their turn signals are",
        "Some idiot just parked across three spaces. What a selfish",
        "Why are the drivers in this town such",
        "That jackass tailgated me for ten miles and then",
        "If you drive under the speed limit in the left lane, you are a",
        "The cyclist who yelled at me today can go to",
        "Taxi drivers in this city are the rudest",
        "Some clown in a sports car almost killed me at the intersection, the stupid",
        "Whoever taught you to drive should be ashamed, you reckless",
        "To the idiot who dinged my door and drove off: I hope you",
        "Truck drivers on this road think they own it, the arrogant",
        "Some jerk on a scooter nearly ran me over on the sidewalk, the stupid",
        "The bus driver slammed the door in my face, that rude",
        "People who text while driving are selfish, dangerous",
    ],
    "sports": [
        "Fans of that team are the dumbest, most obnoxious",
        "Our coach is a clueless idiot who",
        "The referee tonight was a blind, useless",
        "That striker is an overpaid crybaby who",
        "Every supporter of the other club is a",
        "The owner of this franchise is a greedy",
        "Our goalkeeper is so bad it makes me want to",
        "Those drunk fans behind us spent the whole game acting like",
        "The commentators on this channel are a bunch of clueless",
        "This team is an embarrassment. The players are lazy, overpaid",
        "Our manager's tactics are so stupid that a child could",
        "The other team's fans are a bunch of drunken, screaming",
        "That linebacker is a dirty, cheating",
        "The league office is run by corrupt, greedy",
        "My fantasy team is trash because these overpaid idiots",
    ],
    "work": [
        "My boss is a lying, incompetent",
        "The new manager is an arrogant jerk who",
        "My coworker steals credit for my work again. That backstabbing",
        "HR is full of useless",
        "The guy in the next cubicle chews so loud I want to",
        "Dear coworker who keeps microwaving fish: you are a disgusting",
        "My supervisor screamed at me in front of everyone, that pathetic",
        "Management at this company are a bunch of greedy",
        "The intern broke the build again, the clueless",
        "Our team lead is a spineless suck-up who",
        "I quit today. I told my boss exactly what a",
        "The CEO gave himself a bonus and fired half of us. What a greedy",
        "My coworker called in sick again to go to the beach, that lying",
        "The recruiter ghosted me after five interviews, the useless",
        "The client changed the requirements again, the indecisive",
        "My boss texts me at midnight like the entitled",
    ],
    "politics": [
        "Every politician in this city is a lying, corrupt",
        "The mayor is a spineless coward who",
        "Anyone who votes for that clown is a",
        "Those idiots in parliament could not organise a",
        "The council members are a bunch of greedy, useless",
        "Politicians like him are the reason this country is",
        "The senator's speech tonight was the stupidest pile of",
        "Both parties are full of crooks and",
        "If you still believe a word that liar says, you are a",
        "The governor is an arrogant, out-of-touch",
        "These career politicians are nothing but liars and",
        "The minister's new policy is the dumbest idea since",
        "Whoever came up with this tax is a greedy",
        "The candidate who dodged every question tonight is a gutless",
        "Every city official who approved this disaster should be",
    ],
    "gaming": [
        "My teammates in this game are the worst bunch of",
        "Uninstall the game, you trash",
        "This dev team is a pack of greedy, lazy",
        "The kid on the mic would not shut up, the annoying little",
        "You camped the whole match, you cowardly",
        "Whoever designed this boss fight is a sadistic",
        "Gg, you were carried the whole game, you useless",
        "Report our jungler, he is a brain-dead",
        "The guy who rage quit on us is a pathetic",
        "Stop feeding the enemy, you absolute",
        "Whoever balanced this patch has never played the game, the clueless",
        "This lobby is full of screaming twelve-year-olds and",
        "Our healer spent the whole raid afk, the worthless",
        "Stop stealing my kills, you greedy little",
    ],
    "customer_service": [
        "The cashier rolled her eyes at me like the rude",
        "I waited two hours on hold just to talk to some clueless",
        "The waiter at that restaurant was a snotty, arrogant",
        "This airline is run by a bunch of incompetent",
        "The cable company is a scam run by greedy",
        "The manager refused my refund, the smug",
        "Worst service ever. The staff are lazy, rude",
        "The delivery guy threw my package at the door like the careless",
        "That mechanic ripped me off, the lying",
        "The landlord still has not fixed the heater, that greedy",
        "The receptionist hung up on me twice, that rude",
        "The bank charged me another fee, those thieving",
        "The contractor took our money and vanished, the lying",
        "The pharmacy lost my prescription again, the incompetent",
        "The hotel manager laughed at my complaint, the smug",
    ],
    "tech_frustration": [
        "This damn printer is a piece of",
        "My stupid laptop crashed again and lost all my",
        "The wifi in this apartment is absolute",
        "Whoever wrote this garbage code should be",
        "This useless app logged me out for the tenth time. I am going to",
        "Windows updated in the middle of my presentation, the piece of",
        "This phone is a total piece of crap and the company",
        "The self-checkout machine yelled at me again, the stupid",
        "My computer froze again. This goddamn",
        "The smart speaker misheard me again, the dumb",
        "This stupid website keeps asking me to prove I am not a robot. I am going to",
        "The printer at work jammed again and I am about to throw the damn thing",
        "Whoever designed this remote control is an absolute",
        "My phone autocorrected my boss's name to something rude, this useless",
        "The video call dropped five times today. This crap internet",
        "This bloody software update deleted all my",
        "The tech support guy told me to restart it again, the clueless",
    ],
    "family": [
        "My brother is a lazy, entitled",
        "My roommate never cleans anything, that filthy",
        "My ex was a manipulative, lying",
        "My mother-in-law is a nosy, bitter old",
        "My stepdad is a loud, drunk",
        "My sister borrowed my car and wrecked it, the careless",
        "My cousin is a freeloading",
        "My roommate ate my leftovers again, the greedy",
        "My uncle got drunk at the wedding and acted like a complete",
        "My dad never listens to anyone, the stubborn old",
        "My roommate brings strangers home at three in the morning, the selfish",
        "My twin brother read my diary, that sneaky little",
        "My in-laws criticise everything I cook, the ungrateful",
    ],
    "profane": [
        "What the hell is wrong with you, you",
        "Oh for fuck's sake, not this",
        "Holy shit, these people are",
        "Damn it, I am so sick of this",
        "This is complete bullshit and everyone",
        "What a steaming crock of",
        "Screw this job and screw",
        "Go to hell, all of you",
        "This is a shitty, worthless",
        "Who the hell do you think",
        "Fuck off already with your",
        "Goddamn it, who left this crap",
        "Piss off, nobody here wants",
        "Kiss my ass, you smug",
        "Christ, what a bunch of",
        "Holy crap, what a stupid",
        "I don't give a damn what you",
        "Shit, the car broke down again. This piece of",
        "What the fuck were you thinking when you",
        "Screw you and your stupid",
        "Oh hell no, I am not dealing with this",
    ],
    "threat": [
        "If you say that one more time I swear I will",
        "Keep talking and see what happens, you",
        "I know where you live, you little",
        "Touch my car again and I will break your",
        "Next time I see that jerk I am going to",
        "Say that to my face and I will",
        "You better watch your back, because next time",
        "One more word out of you and I swear",
        "If I ever catch that thief, I am going to",
    ],
    "celebrity": [
        "That so-called influencer is a fake, attention-seeking",
        "Reality show stars are the most shallow, useless",
        "The lead singer is a talentless, arrogant",
        "That actor is a spoiled, overrated",
        "Every talk show host is a smug",
        "The director of that movie should be ashamed, what a pretentious",
        "That vlogger is a whiny, fake",
        "The streamer screamed at his fans again, the spoiled little",
        "That billionaire tweeting nonsense again is a spoiled, clueless",
        "The pop star cancelled the show an hour before, the selfish",
        "Every one of these fake gurus online is a lying",
        "That chef on television screams at people like a",
    ],
    "school": [
        "My professor is a condescending jerk who",
        "Our principal is a clueless, power-hungry",
        "The kids in my class are a bunch of spoiled",
        "My lab partner did nothing again, the lazy",
        "The teacher who failed me is a petty, bitter",
        "Group projects are hell because my classmates are useless",
        "The school board is a bunch of clueless",
        "My roommate in the dorm is a slob who",
        "That tutor charged me a fortune and taught me nothing, the useless",
        "The kid who bullied my son is a nasty little",
        "Whoever scheduled exams at seven in the morning is a sadistic",
    ],
}

# Templated provocative openers: group x frame. Groups are behaviours, never protected groups.
PROVOCATIVE_GROUPS: dict[str, list[str]] = {
    "drivers": [
        "people who never use their turn signals",
        "drivers who tailgate on the highway",
        "people who park in the fire lane",
        "drivers who honk the second the light turns green",
        "people who block the box at intersections",
    ],
    "neighbours": [
        "neighbours who mow their lawns at seven on a Sunday",
        "people who let their dogs bark all night",
        "people who leave their trash bins out all week",
        "neighbours who throw loud parties on a work night",
    ],
    "public_spaces": [
        "people who play music on speaker on the bus",
        "people who leave their shopping carts in the middle of the parking lot",
        "people who cut in line at the grocery store",
        "people who recline their seats all the way on planes",
        "people who walk slowly in a group and block the whole sidewalk",
        "people who talk during movies",
    ],
    "work": [
        "coworkers who reply all to every email",
        "managers who schedule meetings at five on a Friday",
        "people who steal food from the office fridge",
        "bosses who take credit for other people's work",
    ],
    "online": [
        "people who post spoilers without warning",
        "trolls who argue in every comment section",
        "influencers who film themselves crying",
        "people who send voice messages instead of texts",
        "people who leave one-star reviews for no reason",
    ],
    "sports": [
        "fans who boo their own team",
        "players who fake injuries to waste time",
        "fans who throw drinks on the field",
    ],
    "gaming": [
        "players who rage quit in ranked matches",
        "gamers who scream into their microphones",
        "people who cheat in online games",
    ],
    "politics": [
        "politicians who break every promise they make",
        "people who argue about politics at family dinners",
    ],
    "customer_service": [
        "customers who yell at waiters",
        "landlords who never return deposits",
        "companies that put you on hold for an hour",
    ],
}
PROVOCATIVE_FRAMES = [
    "Honestly, {g} are the dumbest",
    "I swear {g} are nothing but selfish",
    "Can someone explain why {g} are such",
    "All {g} can go straight to",
    "If you are one of those {g}, you are a",
    "Nobody likes {g}. They are rude, lazy and",
    "I am so done with {g}. Every last one of them is a",
    "Let's be real, {g} are complete",
    "Rant: {g} need to get a clue, because they are",
    "There is a special place in hell for {g}, those",
]

# ------------------------------------------------------------------------------------------------
# Neutral openers, hand-written: (topic, text)
# ------------------------------------------------------------------------------------------------
NEUTRAL_LINES: dict[str, list[str]] = {
    "cooking": [
        "To make a good tomato sauce, start by",
        "The secret to fluffy pancakes is",
        "Last night I tried a new recipe for lentil soup and",
        "When baking bread at home, the most important step is",
        "My grandmother always added a pinch of cinnamon to",
        "If you want crispy roast potatoes, you should",
        "The easiest weeknight dinner I know is",
        "Before you season a cast iron pan, make sure",
        "A simple salad dressing needs only three ingredients:",
        "The best way to store fresh herbs is",
    ],
    "weather": [
        "The forecast for tomorrow says light rain in the morning and",
        "It snowed all night, so this morning the whole street",
        "After a week of heat, the cool breeze today",
        "The storm passed quickly, and by the afternoon",
        "Spring has finally arrived, and the trees",
        "Fog rolled in over the harbour early this morning, and",
        "We checked the weather before the hike because",
        "The autumn leaves in the park are",
    ],
    "sports": [
        "The home team scored twice in the second half and",
        "Our local running club meets every Saturday morning to",
        "The tennis match went to a fifth set, and",
        "My daughter joined the swim team this year and",
        "The stadium was packed for the final, and",
        "Stretching before a long run helps",
        "The coach said the key to winning the league is",
        "Cycling to work has become popular in our town because",
    ],
    "work": [
        "At the team meeting this morning, we discussed",
        "My first week at the new job has been",
        "The project deadline moved to next Friday, so",
        "Working from home works well for me because",
        "Our office is organising a charity bake sale to",
        "The quarterly report shows that sales",
        "A good way to prepare for a job interview is",
        "My coworker recommended a great book about",
    ],
    "travel": [
        "Our flight to Lisbon was delayed an hour, so we",
        "The train ride through the mountains was",
        "When packing for a week-long trip, I always",
        "The hotel staff were friendly and",
        "We spent the afternoon exploring the old town and",
        "The best time to visit the coast is",
        "On our road trip we stopped at a small diner that",
        "Before travelling abroad, remember to",
        "The ferry to the island leaves every two hours, so",
    ],
    "tech_support": [
        "If your printer is not responding, first check that",
        "To reset your router, hold the button on the back for",
        "The latest software update adds a feature that",
        "My laptop battery lasts longer since I",
        "To free up space on your phone, you can",
        "If the app crashes on startup, try",
        "Backing up your files regularly is important because",
        "The easiest way to set up a new printer is",
        "Two-factor authentication keeps your account safe because",
        "If your headphones will not pair, try",
    ],
    "family": [
        "My brother just started college and",
        "Every Sunday our family gets together to",
        "My grandparents celebrated their fiftieth anniversary by",
        "My roommate and I made a cleaning schedule so",
        "The kids spent the whole afternoon building",
        "My sister is learning to play the violin and",
    ],
    "neighbours": [
        "Our neighbours invited us over for a barbecue and",
        "The community garden on our street now has",
        "A new bakery opened around the corner, and",
        "The neighbourhood association is planning a clean-up day to",
        "Our neighbour lent us a ladder so we could",
        "The family next door just adopted a puppy, and",
        "Our street is holding a garage sale this Saturday, so",
    ],
    "school": [
        "In chemistry class today we learned how",
        "The library is open late during exam week so",
        "My favourite teacher always said that",
        "The school science fair this year featured",
        "Studying in short sessions helps me",
        "The history teacher took our class to the museum, where",
        "My son's school is starting a coding club that",
    ],
    "hobbies": [
        "I started learning to knit last winter and",
        "Our book club is reading a novel about",
        "The best part of gardening in spring is",
        "I have been practising the guitar every evening and",
        "Birdwatching at the lake this morning, we saw",
        "Painting with watercolours takes patience because",
        "The photography workshop taught us how to",
        "My favourite board game involves",
    ],
    "forum_reply": [
        "Thanks for sharing this guide, it helped me",
        "Great question. In my experience, the best approach is",
        "Reply: I had the same problem last month and fixed it by",
        "Good point about the budget, although I think",
        "Edit: thanks everyone for the helpful replies, I ended up",
        "Welcome to the forum! Before posting, you might want to",
        "Interesting article. The part about renewable energy",
        "I agree with the comment above, and I would add that",
        "Thanks for the detailed answer. I tried your suggestion and",
        "Has anyone here tried the new hiking trail by the lake? I",
    ],
    "customer_service": [
        "The customer service team answered my question quickly and",
        "I returned the jacket because it was too small, and the store",
        "The waiter recommended the soup of the day, which",
        "Our package arrived a day early and",
        "The mechanic explained what was wrong with the brakes and",
        "The librarian helped me find an old newspaper article about",
        "The shop assistant showed me how to",
    ],
    "gaming": [
        "The new update for the game adds a co-op mode where",
        "Our team finally beat the last level after",
        "My favourite strategy in this game is to",
        "The puzzle in the third chapter took us",
        "We play a board game night every Thursday, and this week",
        "The speedrun community discovered a new route that",
    ],
    "politics": [
        "The city council voted this week to",
        "Local elections will be held next month, and",
        "The new bike lanes proposed by the council would",
        "Voter registration closes on Friday, so",
        "The public library will get new funding next year, which",
        "The town hall meeting about the new park was",
    ],
    "nature": [
        "The national park has over two hundred miles of trails that",
        "Bees are important for gardens because",
        "The river near our house is home to",
        "On clear nights you can see the Milky Way from",
        "In autumn the geese fly south over our town and",
        "The tide pools at low tide are full of",
    ],
    "celebrity": [
        "The singer announced a new album that",
        "The documentary about the old film studio shows how",
    ],
}

NEUTRAL_SUBJECTS: dict[str, list[str]] = {
    "cooking": ["a vegetable curry", "banana bread", "roast chicken", "a mushroom risotto", "apple pie"],
    "travel": ["a weekend in the mountains", "a trip to the coast", "a city break by train", "a camping holiday"],
    "hobbies": ["learning the piano", "growing tomatoes", "running a first half marathon", "building a bookshelf"],
    "tech_support": [
        "a slow laptop",
        "a printer that will not connect",
        "setting up a home network",
        "moving photos to a new phone",
    ],
    "work": ["a first team presentation", "organising a busy week", "starting a new job", "a long commute"],
    "weather": ["a rainy weekend", "the first snow of winter", "a hot summer afternoon", "a windy day at the beach"],
    "sports": [
        "a first five-kilometre run",
        "the local football season",
        "learning to swim as an adult",
        "a cycling holiday",
    ],
    "family": ["a family picnic", "a grandparent's birthday", "moving to a new house", "a first day at school"],
}
NEUTRAL_FRAMES = [
    "Here are a few tips for {s}. First,",
    "I wanted to share my experience with {s}, because",
    "Question for the group: any advice on {s}? I",
    "The best thing about {s} is",
    "We spent the whole week planning {s}, and",
    "A friend asked me about {s}, so I told her",
    "My notes on {s}: start early and",
]


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def build(seed: int = 0) -> list[dict]:
    """All prompts as dicts, deduplicated (case-insensitive), in a fixed order with fixed ids."""
    rng = random.Random(seed)
    rows: list[tuple[str, str, str]] = []
    for topic, lines in PROVOCATIVE_LINES.items():
        rows += [("provocative", topic, t) for t in lines]
    for topic, groups in PROVOCATIVE_GROUPS.items():
        for g in groups:
            for frame in rng.sample(PROVOCATIVE_FRAMES, 6):
                rows.append(("provocative", topic, frame.format(g=g)))
    for topic, lines in NEUTRAL_LINES.items():
        rows += [("neutral", topic, t) for t in lines]
    for topic, subjects in NEUTRAL_SUBJECTS.items():
        for s in subjects:
            for frame in rng.sample(NEUTRAL_FRAMES, 4):
                rows.append(("neutral", topic, frame.format(s=s)))
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for tag, topic, text in rows:
        text = _clean(text)
        key = text.lower()
        if key in seen:
            continue
        seen.add(key)
        out.append({"id": f"p{len(out) + 1:04d}", "text": text, "tag": tag, "topic": topic})
    return out


def main() -> None:
    path = Path(__file__).with_name("prompts.jsonl")
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in build():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
