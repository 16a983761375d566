"""Word tables of the built-in corpus's world: syllables of town names, regions, people, animals, dishes.

Data only; `pocketlm.data.corpus` draws from them. Changing any entry changes the generated corpus
(bump `corpus.CORPUS_VERSION`).
"""

SYLLABLES = ["ka", "lo", "mar", "ven", "dor", "shi", "tal", "ru", "bel", "fen", "os", "ith", "gra", "mi",
             "zan", "por", "el", "sa", "tor", "win", "ca", "nor", "vi", "lan", "bra", "de"]
TOWN_ENDINGS = ["ton", "ford", "burg", "mouth", "vale", "stead", "wick", "field", "port", "haven", "bridge"]
REGIONS = ["the Northern Plains", "the Coastal Lowlands", "the High Valleys", "the Eastern Hills",
           "the River Delta", "the Western Forests", "the Lake District", "the Southern Steppe"]
INDUSTRIES = ["fishing", "textiles", "wine making", "shipbuilding", "software", "farming", "mining",
              "tourism", "glass making", "pottery", "logistics", "furniture", "printing", "tea growing"]
LANDMARKS = ["an old stone bridge", "a clock tower", "a covered market", "a lighthouse", "a public library",
             "a botanical garden", "a castle ruin", "a railway museum", "a marble fountain",
             "a wooden windmill", "an observatory", "a concert hall"]
CLIMATES = ["mild and rainy", "dry and sunny", "cold in winter and warm in summer", "humid", "windy",
            "foggy in the mornings"]
FIRST_NAMES = ["Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira",
               "Leo", "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera",
               "Walter", "Xenia", "Yusuf", "Zoe", "Mei", "Ravi", "Lena", "Tom", "Ines", "Omar", "Lucy", "Ivan"]
LAST_NAMES = ["Smith", "Novak", "Garcia", "Chen", "Okafor", "Muller", "Rossi", "Kowalski", "Silva", "Tanaka",
              "Berg", "Larsen", "Haddad", "Costa", "Ivanova", "Moreau", "Patel", "Fischer", "Lopez", "Kim"]
JOBS = ["baker", "teacher", "nurse", "carpenter", "engineer", "fisher", "librarian", "painter", "farmer",
        "doctor", "pilot", "gardener", "musician", "chemist", "tailor", "programmer", "driver", "potter"]
# name, class, habitat, diet, lifespan (years), a fact
ANIMALS = [
    ("red fox", "mammal", "forests and grasslands", "small rodents, birds and berries", 4,
     "It uses the Earth's magnetic field to judge the distance of a jump."),
    ("honey bee", "insect", "meadows and gardens", "nectar and pollen", 1,
     "It tells other bees where flowers are with a waggle dance."),
    ("grey wolf", "mammal", "forests, tundra and mountains", "deer, elk and other large animals", 8,
     "It lives and hunts in family groups called packs."),
    ("barn owl", "bird", "farmland and open country", "mice and voles", 4,
     "It can find prey in complete darkness by sound alone."),
    ("green sea turtle", "reptile", "warm coastal waters", "seagrass and algae", 70,
     "It returns to the beach where it hatched to lay its own eggs."),
    ("octopus", "mollusc", "rocky sea floors", "crabs, shrimp and clams", 2,
     "It has three hearts and can change the colour of its skin."),
    ("african elephant", "mammal", "savannas and forests", "grass, leaves and bark", 60,
     "It is the largest living land animal."),
    ("salmon", "fish", "rivers and the open ocean", "insects, shrimp and small fish", 5,
     "It swims upstream to the river where it was born in order to spawn."),
    ("penguin", "bird", "cold southern coasts", "fish and krill", 20,
     "It cannot fly, but it swims very well."),
    ("frog", "amphibian", "ponds and wet meadows", "insects and worms", 10,
     "It begins life as a tadpole that breathes with gills."),
    ("bat", "mammal", "caves and old buildings", "insects and fruit", 20,
     "It finds its way at night by echolocation."),
    ("horse", "mammal", "grasslands and farms", "grass and hay", 28,
     "It can sleep both lying down and standing up."),
    ("ant", "insect", "soil and under stones", "seeds, sugar and other insects", 1,
     "It lives in colonies that can hold millions of workers."),
    ("dolphin", "mammal", "seas and some rivers", "fish and squid", 40,
     "It breathes air through a blowhole on the top of its head."),
    ("eagle", "bird", "mountains and coasts", "fish and small mammals", 25,
     "It can see prey from more than a kilometre away."),
    ("snail", "mollusc", "gardens and damp woods", "leaves and decaying plants", 5,
     "It carries its shell for its whole life."),
]
# dish, ingredients, cooking method, minutes
DISHES = [
    ("tomato soup", ["tomatoes", "an onion", "garlic", "olive oil", "salt"], "simmer", 30),
    ("pancakes", ["flour", "milk", "two eggs", "butter", "a pinch of sugar"], "fry", 20),
    ("vegetable curry", ["potatoes", "carrots", "peas", "coconut milk", "curry paste"], "simmer", 40),
    ("fried rice", ["cooked rice", "two eggs", "spring onions", "soy sauce", "peas"], "fry", 15),
    ("apple pie", ["apples", "flour", "butter", "sugar", "cinnamon"], "bake", 50),
    ("lentil stew", ["red lentils", "carrots", "an onion", "cumin", "vegetable stock"], "simmer", 35),
    ("banana bread", ["ripe bananas", "flour", "two eggs", "butter", "baking soda"], "bake", 60),
    ("omelette", ["three eggs", "cheese", "butter", "salt", "pepper"], "fry", 10),
    ("bean salad", ["white beans", "cucumber", "parsley", "lemon juice", "olive oil"], "mix", 10),
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
OBJECTS = ["a red umbrella", "an old map", "a small key", "a blue notebook", "a broken radio",
           "a letter", "a bicycle", "a basket of apples", "a paper kite", "a silver coin"]
FEELINGS = ["happy", "tired", "curious", "nervous", "proud", "surprised", "calm", "worried"]
WEATHER = ["sunny", "cloudy", "rainy", "windy", "foggy", "snowy", "stormy", "clear"]
TOPICS = ["gardening", "chess", "astronomy", "baking", "cycling", "birdwatching", "photography",
          "woodworking", "history", "languages"]
